"""The phase table of a Deep Incubation pipeline: the one place that says what each phase is.

Work dir of a pipeline (``cfg.work_dir``)::

    meta/meta.pth                           meta pretraining (Sec. 3.2)
    incubate/module_<k>/module_<k>.pth      module incubation, one job per module k
    assembled.pth                           assembly of the K modules
    finetune/finetuned.pth                  fine-tuning of the assembled model
    e2e/e2e.pth                             the end-to-end baseline of the same full model
    stack/stacked.pth                       peer: the meta model's blocks stacked (G_stack), then end to end
    grow/grown.pth                          peer: every module grown from the meta model at once, then end to end

The peers (``stack``, ``grow``) share the meta model with incubation and run only when a config's
``incubation.methods`` names them.

Each trained phase's folder also holds its logs, MMEngine checkpoints and ``phase_record.json``.
Everything else (the runner, the checkpoint tags, the records, make_meta, the plots, the tools) reads
:data:`PHASE_TABLE` through :class:`Phase`: adding a phase is one :class:`PhaseSpec` row here and one
recipe in :func:`~mmincubation.engine.runner.phase_config.phase_recipe`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PhaseSpec:
    """One row of the phase table.

    Attributes:
        name: the phase's name (``--phase NAME``).
        work_dir: its run's folder under the pipeline's work dir (``{module}`` filled in; '' = the work dir).
        product: the file it writes when it finishes, in its work dir (``{module}`` filled in).
        inputs: the phases whose products it reads (``'incubate'``: every module's).
        holds: what its product holds: ``'meta'`` (a meta model), ``'module'`` (one module's tensors, keyed as
            in the full model) or ``'full'`` (the full model).
        checkpoint_holds: what its intermediate MMEngine checkpoints hold (``'hybrid'`` for a module
            incubation's: the meta model with one real module); None when it trains nothing.
        method: the method whose cost and result it counts for (a key of :data:`METHODS`).
        shared_with: other methods that build on its product and count its cost too (the meta model's:
            the peers ``stack`` and ``grow``).
        tested: whether it ends with a test on the test set (when the config has one).
        label: its name in figures and tables (``{module}`` filled in).
        title: what it does, for the log line before it runs (``{module}``, ``{num_modules}`` filled in).
        reads: the setting of its run that gets its one input's product file (``'load_from'``,
            ``'model.meta_checkpoint'``); None when it reads no product (or, as the assembly, several).
        per_module: one run per module (``--module k``).
    """

    name: str
    work_dir: str
    product: str
    inputs: tuple[str, ...]
    holds: str
    checkpoint_holds: str | None
    method: str
    tested: bool
    label: str
    title: str
    reads: str | None = None
    per_module: bool = False
    shared_with: tuple[str, ...] = ()

    @property
    def trains(self) -> bool:
        return self.checkpoint_holds is not None

    @property
    def counted_by(self) -> tuple[str, ...]:
        """The methods that pay for this phase."""
        return (self.method, ) + self.shared_with


#: The phases in pipeline order; ``e2e`` is the end-to-end baseline of the same full model.
PHASE_TABLE: dict[str, PhaseSpec] = {spec.name: spec for spec in (
    PhaseSpec('meta', 'meta', 'meta.pth', (), 'meta', 'meta', 'incubation', False, 'meta model',
              'meta pretraining', shared_with=('stack', 'grow')),
    PhaseSpec('incubate', 'incubate/module_{module}', 'module_{module}.pth', ('meta', ), 'module', 'hybrid',
              'incubation', False, 'module {module}', 'incubate module {module} of {num_modules}',
              reads='model.meta_checkpoint', per_module=True),
    PhaseSpec('assemble', '', 'assembled.pth', ('incubate', ), 'full', None, 'incubation', False, 'assembly',
              'assemble the {num_modules} modules'),
    PhaseSpec('finetune', 'finetune', 'finetuned.pth', ('assemble', ), 'full', 'full', 'incubation', True,
              'fine-tune', 'fine-tune the assembled model', reads='load_from'),
    PhaseSpec('e2e', 'e2e', 'e2e.pth', (), 'full', 'full', 'e2e', True, 'end-to-end',
              'end-to-end baseline'),
    PhaseSpec('stack', 'stack', 'stacked.pth', ('meta', ), 'full', 'full', 'stack', True, 'stack',
              "stack the meta model's blocks, then train end to end", reads='model.meta_checkpoint'),
    PhaseSpec('grow', 'grow', 'grown.pth', ('meta', ), 'full', 'full', 'grow', True, 'grow',
              'grow every module from the meta model, then train end to end', reads='model.meta_checkpoint'),
)}
PHASES = tuple(PHASE_TABLE)
#: The phases whose product is the full model and that end with a test (when the config has one).
TESTED = tuple(name for name, spec in PHASE_TABLE.items() if spec.tested)
#: The methods a pipeline compares, each with the phase whose product is its result: Deep Incubation, the
#: end-to-end baseline, and two growth peers from the same meta model (depthwise stacking, as G_stack; every
#: module grown at once, as incubation's grown modules, without the independent module jobs).
METHODS = {'incubation': 'finetune', 'e2e': 'e2e', 'stack': 'stack', 'grow': 'grow'}
#: Each method's name in tables and logs.
METHOD_TITLES = {'incubation': 'Deep Incubation', 'e2e': 'end-to-end', 'stack': 'stack (G_stack)',
                 'grow': 'grow all modules'}
#: The methods a pipeline runs unless ``incubation.methods`` says otherwise.
DEFAULT_METHODS = ('incubation', 'e2e')


@dataclass(frozen=True)
class Phase:
    """One phase of a pipeline; ``module`` is the module index of a per-module phase, else None.

    Raises:
        ValueError: an unknown phase name, a per-module phase without module or another phase with one.
    """

    name: str
    module: int | None = None

    def __post_init__(self) -> None:
        if self.name not in PHASE_TABLE:
            raise ValueError(f'phase must be one of {PHASES}, got {self.name!r}')
        if (self.module is None) == self.spec.per_module:
            raise ValueError(f'the incubate phase needs a module index, the others none; got {self}')

    @property
    def spec(self) -> PhaseSpec:
        return PHASE_TABLE[self.name]

    def __str__(self) -> str:
        return self.name if self.module is None else f'{self.name} module {self.module}'

    def work_dir(self, root: str | Path) -> Path:
        """Folder of the phase's run (the pipeline's own folder for the assembly, which trains nothing)."""
        return Path(root, self.spec.work_dir.format(module=self.module))

    def lock_file(self, root: str | Path) -> Path:
        """The file that holds the phase's one writer (:mod:`~mmincubation.engine.runner.phase_lock`)."""
        return self.work_dir(root) / '.phase.lock' if self.spec.work_dir else Path(root, f'.{self.name}.lock')

    @property
    def product_name(self) -> str:
        return self.spec.product.format(module=self.module)

    @property
    def label(self) -> str:
        return self.spec.label.format(module=self.module)

    def title(self, num_modules: int) -> str:
        """What the phase does, in words (``incubate module 1 of 4``)."""
        return self.spec.title.format(module=self.module, num_modules=num_modules)

    def product(self, root: str | Path) -> Path:
        """The file the phase writes when it finishes."""
        return self.work_dir(root) / self.product_name

    def inputs(self, num_modules: int) -> list[Phase]:
        """The phases whose products this one needs."""
        return [Phase(name, module) for name in self.spec.inputs
                for module in (range(num_modules) if PHASE_TABLE[name].per_module else [None])]

    def dependents(self, num_modules: int) -> list[Phase]:
        """Every phase made, directly or through others, from this one's product (itself excluded), in order."""
        found: list[Phase] = []
        for name, spec in PHASE_TABLE.items():
            for phase in [Phase(name, m) for m in (range(num_modules) if spec.per_module else [None])]:
                made_from = phase.inputs(num_modules)
                if self in made_from or any(earlier in made_from for earlier in found):
                    found.append(phase)
        return found

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: pipeline order, then module index."""
        return PHASES.index(self.name), -1 if self.module is None else self.module


def all_phases(num_modules: int, methods: Sequence[str] = DEFAULT_METHODS) -> list[Phase]:
    """Every phase of a pipeline of ``num_modules`` modules that runs ``methods`` (by default incubation and
    E2E), in order."""
    names = phases_of(methods)
    return [Phase(name, module) for name, spec in PHASE_TABLE.items() if name in names
            for module in (range(num_modules) if spec.per_module else [None])]


def phases_of(methods: Sequence[str]) -> tuple[str, ...]:
    """The phases the given methods need, in pipeline order (``--phase all``).

    Raises:
        ValueError: naming ``incubation.methods`` when a method is unknown.
    """
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise ValueError(f'incubation.methods: unknown methods {unknown}; choose from {list(METHODS)}')
    return tuple(name for name, spec in PHASE_TABLE.items() if set(spec.counted_by) & set(methods))
