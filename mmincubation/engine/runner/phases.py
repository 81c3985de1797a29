"""The phases of a Deep Incubation pipeline: names, order, work dirs, products and inputs, in one place.

Work dir of a pipeline (``cfg.work_dir``)::

    meta/meta.pth                           meta pretraining (Sec. 3.2)
    incubate/module_<k>/module_<k>.pth      module incubation, one job per module k
    assembled.pth                           assembly of the K modules
    finetune/finetuned.pth                  fine-tuning of the assembled model
    e2e/e2e.pth                             the end-to-end baseline of the same full model

Each trained phase's folder also holds its logs, MMEngine checkpoints and ``phase_record.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Phases in pipeline order; ``e2e`` is the end-to-end baseline of the same full model.
PHASES = ('meta', 'incubate', 'assemble', 'finetune', 'e2e')
#: The phases whose product is the full model and that end with a test (when the config has one).
TESTED = ('finetune', 'e2e')
_PRODUCTS = {'meta': 'meta.pth', 'finetune': 'finetuned.pth', 'e2e': 'e2e.pth'}


@dataclass(frozen=True)
class Phase:
    """One phase of a pipeline; ``module`` is the module index of an ``incubate`` phase, else None.

    Raises:
        ValueError: an unknown phase name, an incubation without module or another phase with one.
    """

    name: str
    module: int | None = None

    def __post_init__(self) -> None:
        if self.name not in PHASES:
            raise ValueError(f'phase must be one of {PHASES}, got {self.name!r}')
        if (self.module is None) == (self.name == 'incubate'):
            raise ValueError(f'the incubate phase needs a module index, the others none; got {self}')

    def __str__(self) -> str:
        return self.name if self.module is None else f'{self.name} module {self.module}'

    def work_dir(self, root: str | Path) -> Path:
        """Folder of the phase's run (the pipeline's own folder for the assembly, which trains nothing)."""
        if self.name == 'assemble':
            return Path(root)
        if self.name == 'incubate':
            return Path(root, 'incubate', f'module_{self.module}')
        return Path(root, self.name)

    @property
    def product_name(self) -> str:
        if self.name == 'incubate':
            return f'module_{self.module}.pth'
        return 'assembled.pth' if self.name == 'assemble' else _PRODUCTS[self.name]

    def product(self, root: str | Path) -> Path:
        """The file the phase writes when it finishes."""
        return self.work_dir(root) / self.product_name

    def inputs(self, num_modules: int) -> list[Phase]:
        """The phases whose products this one needs."""
        return {'incubate': [Phase('meta')], 'assemble': [Phase('incubate', k) for k in range(num_modules)],
                'finetune': [Phase('assemble')]}.get(self.name, [])

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: pipeline order, then module index."""
        return PHASES.index(self.name), -1 if self.module is None else self.module
