"""Derives each phase's ordinary MMEngine config from one whole-pipeline incubation config.

The pipeline config is a normal mmpretrain classification config of the *full* model plus an
``incubation`` section::

    incubation = dict(
        num_modules=4,                  # or module_depths=(3, 3, 3, 3)
        meta=dict(train_cfg=dict(max_epochs=300), model=dict(backbone=dict(drop_path_rate=0.))),
        incubate=dict(...), finetune=dict(...), e2e=dict(...),
        dmt=dict(seed=0),               # optional: decentralized modular training, see below
        module_init='scratch')          # or 'meta': grow each module from the meta model (ours)

Each phase section is merged over the shared settings (``_delete_=True`` works as in ``_base_``
inheritance); the backbone depth, the hybrid model, the export and record hooks, the work dir and
the checkpoint links are filled in here, so the user never writes them per phase.

``dmt`` (decentralized modular training) wraps the incubate phase's training set in
``mmincubation.ClassBalancedSplitDataset`` (keyword arguments from the section, e.g. ``seed``), so
module k sees only the k-th of K class-balanced, disjoint splits; meta pretraining and fine-tuning
keep the full set. A config may also write the wrapper itself: its ``split``/``num_splits`` left
``None`` are filled per module all the same.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

from mmengine.config import Config, ConfigDict
from mmpretrain.registry import MODELS

from ...layout import LayoutError, ModuleLayout

#: Phases in pipeline order; ``e2e`` is the end-to-end baseline of the same full model.
PHASES = ('meta', 'incubate', 'assemble', 'finetune', 'e2e')
ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels')


def resolve_arch(backbone: dict) -> dict:
    """The backbone's ``arch`` as an explicit dict, looking named archs up in the class's zoo."""
    arch = backbone.get('arch', 'base')
    if isinstance(arch, str):
        backbone_cls = MODELS.get(backbone['type'])
        zoo = getattr(backbone_cls, 'arch_zoo', {})
        if arch.lower() not in zoo:
            raise LayoutError(f'model.backbone.arch {arch!r} is not one of {backbone["type"]}\'s archs {sorted(zoo)}')
        arch = zoo[arch.lower()]
    arch = dict(arch)
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise LayoutError(f'model.backbone.arch lacks {missing}; expected a name or a dict with {ARCH_KEYS}')
    return arch


def build_layout(cfg: Config) -> ModuleLayout:
    """The full model's module layout from ``cfg.incubation`` and the backbone depth."""
    depth = resolve_arch(cfg.model.backbone)['num_layers']
    incubation = cfg.get('incubation') or {}
    if incubation.get('module_depths') is not None:
        layout = ModuleLayout(tuple(incubation['module_depths']))
        if layout.total_depth != depth:
            raise LayoutError(f'incubation.module_depths {layout.depths} add up to {layout.total_depth} blocks '
                              f'but model.backbone has {depth}')
        return layout
    return ModuleLayout.uniform(depth, int(incubation.get('num_modules', 4)))


def product_name(phase: str, module: int | None = None) -> str:
    """File name of a phase's product inside its work dir."""
    return {'meta': 'meta.pth', 'incubate': f'module_{module}.pth', 'finetune': 'finetuned.pth',
            'e2e': 'e2e.pth'}[phase]


def phase_work_dir(work_dir: str, phase: str, module: int | None = None) -> Path:
    if phase == 'incubate':
        return Path(work_dir, 'incubate', f'module_{module}')
    return Path(work_dir, phase)


def _set_depth(model: ConfigDict, depth: int) -> None:
    arch = resolve_arch(model.backbone)
    arch['num_layers'] = depth
    model.backbone.arch = arch


def _split_for_dmt(phase_cfg: Config, dmt: dict | None, module: int, num_modules: int) -> None:
    """DMT: module k's training set is split k of K (``incubation.dmt`` or a hand-written wrapper)."""
    loader = phase_cfg.get('train_dataloader') or {}
    dataset = loader.get('dataset') or {}
    wrapped = str(dataset.get('type', '')).endswith('ClassBalancedSplitDataset')
    if dmt is not None:
        if not dataset or wrapped:
            raise ValueError('incubation.dmt wraps the incubate phase\'s train_dataloader.dataset in '
                             'ClassBalancedSplitDataset: it needs a dataset there that is not wrapped already, got '
                             f'{dict(dataset) or None}')
        dataset = loader.dataset = ConfigDict(type='mmincubation.ClassBalancedSplitDataset', dataset=dataset, **dmt)
        wrapped = True
    if wrapped:
        dataset.num_splits = dataset.get('num_splits') or num_modules
        dataset.split = module if dataset.get('split') is None else dataset.split


def phase_config(cfg: Config, phase: str, module: int | None = None, meta_checkpoint: str | None = None,
                 init_checkpoint: str | None = None, cost_offset: float = 0.0) -> Config:
    """The MMEngine config of one phase (``module`` for ``incubate``).

    ``meta_checkpoint`` feeds a hybrid's meta modules, ``init_checkpoint`` is loaded into a fresh
    fine-tune run. An interrupted phase (a ``last_checkpoint`` in its work dir) resumes instead.
    """
    if phase not in PHASES or phase == 'assemble':
        raise ValueError(f'phase must be one of {[p for p in PHASES if p != "assemble"]}, got {phase!r}')
    layout = build_layout(cfg)
    phase_cfg = copy.deepcopy(cfg)
    overrides = (phase_cfg.get('incubation') or {}).get(phase) or {}
    for key in ('incubation', 'runner_type'):
        phase_cfg.pop(key, None)
    phase_cfg.merge_from_dict(overrides.to_dict() if isinstance(overrides, ConfigDict) else dict(overrides))

    model = phase_cfg.model
    if phase == 'meta':
        _set_depth(model, layout.num_modules)
    elif phase == 'incubate':
        if model.type not in ('ImageClassifier', 'mmpretrain.ImageClassifier'):
            raise LayoutError(f'module incubation needs an ImageClassifier model, got model.type={model.type!r}')
        hybrid = layout.hybrid(module)
        _set_depth(model, hybrid.total_depth)
        model.update(type='mmincubation.IncubationClassifier', module_depths=list(layout.depths),
                     target_module=module, meta_checkpoint=meta_checkpoint,
                     module_init=(cfg.get('incubation') or {}).get('module_init', 'scratch'))
        phase_cfg.optim_wrapper.setdefault('constructor', 'mmincubation.TrainableParamsOptimWrapperConstructor')
        _split_for_dmt(phase_cfg, (cfg.get('incubation') or {}).get('dmt'), module, layout.num_modules)
    else:
        _set_depth(model, layout.total_depth)
    num_blocks = resolve_arch(model.backbone)['num_layers']

    work_dir = phase_work_dir(cfg.work_dir, phase, module)
    phase_cfg.work_dir = str(work_dir)
    tag = phase if module is None else f'{phase}_module_{module}'
    phase_cfg.experiment_name = f'{Path(cfg.filename or "incubation").stem}_{tag}_{time.strftime("%Y%m%d_%H%M%S")}'
    phase_cfg.resume = (work_dir / 'last_checkpoint').is_file()
    phase_cfg.load_from = None if phase_cfg.resume else (init_checkpoint or phase_cfg.get('load_from'))
    phase_cfg.custom_hooks = list(phase_cfg.get('custom_hooks') or []) + [
        dict(type='mmincubation.PhaseRecordHook', phase=tag, num_blocks=num_blocks, cost_offset=cost_offset),
        dict(type='mmincubation.ExportWeightsHook', filename=product_name(phase, module), phase=phase,
             module_depths=list(layout.depths)),
        dict(type='mmincubation.RandomStateHook'),
    ]
    return phase_cfg
