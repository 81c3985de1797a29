"""Derives each phase's recipe, an ordinary MMEngine config, from one whole-pipeline incubation config.

The pipeline config is a normal mmpretrain classification config of the *full* model plus an
``incubation`` section::

    incubation = dict(
        num_modules=4,                  # or module_depths=(3, 3, 3, 3)
        meta=dict(train_cfg=dict(max_epochs=300), model=dict(backbone=dict(drop_path_rate=0.))),
        incubate=dict(...), finetune=dict(...), e2e=dict(...),
        dmt=dict(seed=0),               # optional: decentralized modular training, see below
        module_init='scratch',          # or 'meta': grow each module from the meta model (ours)
        meta_from=dict(checkpoint='pretrained.pth', blocks=None, cost=None, warmup=None))  # optional, see below

Each phase section is merged over the shared settings (``_delete_=True`` works as in ``_base_``
inheritance); the backbone depths (through the backbone's spec, :mod:`mmincubation.backbones`)
and the hybrid model are filled in here, so the user never writes them per phase. A recipe is
what the phase trains: the runner alone adds the wiring of a run (work dir, hooks, resume, the
checkpoints a phase reads), so tools that only build or evaluate a phase's model use the recipe as is.

``meta_from`` makes the meta model of a pretrained network of the same width instead of training it
(:mod:`mmincubation.make_meta`: its stem, the given or evenly spaced ``blocks``, final norm and head;
``cost`` is what training it cost, in block-images, when not read from its own phase records). With a
``warmup`` (phase settings merged over ``meta``'s, e.g. ``dict(train_cfg=dict(max_epochs=1))``), the meta
phase trains the made model that long, e.g. to train a new head; without, the made model is the meta
phase's product.

``dmt`` (decentralized modular training) wraps the incubate phase's training set in
``mmincubation.ClassBalancedSplitDataset`` (keyword arguments from the section, e.g. ``seed``), so
module k sees only the k-th of K class-balanced, disjoint splits; meta pretraining and fine-tuning
keep the full set. A config may also write the wrapper itself: its ``split``/``num_splits`` left
``None`` are filled per module all the same.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping

from mmengine.config import Config, ConfigDict

from ...backbones import spec_of
from ...layout import LayoutError, ModuleLayout
from ...phases import PHASE_TABLE, PHASES


class RecipeError(ValueError):
    """A phase's settings cannot give what the pipeline promises (e.g. an exact resume); the message names them."""


def check_resumable(recipe: Config, phase: str) -> None:
    """Refuse the loader and checkpoint settings with which an interrupted phase cannot resume exactly.

    * Iteration checkpoints (``default_hooks.checkpoint.by_epoch=False``) in an epoch-based phase: MMEngine's
      ``EpochBasedTrainLoop`` resumes one by running its whole epoch again (mmengine#1205), training more
      iterations than the recipe says. Iteration-based phases (``IterBasedTrainLoop``) skip what was trained.
    * Persistent data-loader workers (``persistent_workers=True``) in an epoch-based phase: their random streams
      go on from epoch to epoch, while a resumed run starts new workers, so random augmentation differs after a
      resume (mmdetection#4193); workers restarted each epoch restart their streams the same way in both. An
      iteration-based phase resumes by fetching the batches trained before from the same workers, so it
      may keep them.

    Raises:
        RecipeError: naming the phase and the setting, and what to set instead.
    """
    train_cfg = recipe.get('train_cfg') or {}
    epoch_based = train_cfg.get('by_epoch', 'max_epochs' in train_cfg) or \
        str(train_cfg.get('type', '')).endswith('EpochBasedTrainLoop')
    checkpoint = (recipe.get('default_hooks') or {}).get('checkpoint') or {}
    if epoch_based and checkpoint.get('by_epoch', True) is False:
        raise RecipeError(f'the {phase} phase trains by epochs but default_hooks.checkpoint.by_epoch=False: MMEngine '
                          'resumes an iteration checkpoint by training its whole epoch again; save by epoch, or '
                          "train by iterations (train_cfg=dict(type='IterBasedTrainLoop', max_iters=...))")
    loader = recipe.get('train_dataloader') or {}
    if epoch_based and loader.get('persistent_workers') and loader.get('num_workers', 0) > 0:
        raise RecipeError(f'the {phase} phase\'s train_dataloader.persistent_workers=True: a resumed run would not '
                          'repeat the random augmentation of an uninterrupted one; set persistent_workers=False '
                          '(workers restart each epoch, a few seconds per epoch), or train by iterations')


def build_layout(cfg: Config) -> ModuleLayout:
    """The full model's module layout from ``cfg.incubation`` and the backbone's stage depths.

    Raises:
        LayoutError: naming ``incubation.module_depths`` or ``num_modules`` when they do not fit the backbone.
    """
    spec = spec_of(cfg.model.backbone)
    stages = spec.stage_depths(cfg.model.backbone)
    incubation = cfg.get('incubation') or {}
    if incubation.get('module_depths') is not None:
        depths = tuple(incubation['module_depths'])
        if sum(depths) != sum(stages):
            raise LayoutError(f'incubation.module_depths {list(depths)} add up to {sum(depths)} blocks '
                              f'but model.backbone has {sum(stages)}')
        return ModuleLayout(depths, spec.naming, stages)
    num_modules = incubation.get('num_modules', 4)
    if isinstance(num_modules, bool) or not isinstance(num_modules, int) or num_modules < 1:
        raise LayoutError(f'incubation.num_modules must be a positive whole number, got {num_modules!r}')
    return ModuleLayout.uniform(sum(stages), num_modules, spec.naming, stages)


def network_blocks(model: Mapping) -> list[str]:
    """The sub-module names of the blocks of the network a model config builds (its backbone's stage depths, a
    phase's once :func:`phase_recipe` set them), in global order: ``['backbone.layers.0', ...]``."""
    spec = spec_of(model['backbone'])
    stages = spec.stage_depths(model['backbone'])
    return ModuleLayout((sum(stages), ), spec.naming, stages).block_modules()


def phase_layout(layout: ModuleLayout, phase: str, module: int | None = None) -> ModuleLayout:
    """The layout of the network ``phase`` trains: the meta model, module ``module``'s hybrid or the full model."""
    if phase == 'incubate':
        if module is None:
            raise ValueError('the incubate phase needs a module index')
        return layout.hybrid(module)
    return layout.meta() if phase == 'meta' else layout


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


#: ``activation_checkpointing=BLOCKS`` (a pipeline's or a phase's setting) recomputes every block of the phase's
#: network in the backward pass: the recipe names them (MMEngine's setting takes sub-module names, which differ
#: between the meta model, a hybrid and the full model).
BLOCKS = 'blocks'
#: The phases that train the full model grown from the meta model (:class:`~mmincubation.models.GrownClassifier`).
GROWN = tuple(name for name, spec in PHASE_TABLE.items() if spec.inputs == ('meta', ) and spec.holds == 'full')


#: What only MMEngine's ``AmpOptimWrapper`` takes: its precision, loss scaling and sharded scaler (FSDP).
AMP_SETTINGS = ('dtype', 'loss_scale', 'use_fsdp')


def drop_amp_settings_of_fp32(optim_wrapper: dict | None) -> None:
    """An FP32 run of a mixed-precision config: ``optim_wrapper.type='OptimWrapper'`` set over the bf16 GPU configs
    (configs/_base_/schedules/bf16.py) leaves their ``dtype``, which ``OptimWrapper`` refuses (an unexpected keyword
    argument); a plain ``OptimWrapper`` takes neither of :data:`AMP_SETTINGS`, so they are dropped (in place)."""
    if optim_wrapper and str(optim_wrapper.get('type', 'OptimWrapper')).split('.')[-1] == 'OptimWrapper':
        for key in AMP_SETTINGS:
            optim_wrapper.pop(key, None)


def as_fp32(optim_wrapper: dict) -> None:
    """``optim_wrapper`` (in place) as MMEngine's plain fp32 ``OptimWrapper``: a bf16 GPU config's steps on a CPU,
    where ``AmpOptimWrapper`` refuses to run."""
    optim_wrapper['type'] = 'OptimWrapper'
    drop_amp_settings_of_fp32(optim_wrapper)


def phase_recipe(cfg: Config, phase: str, module: int | None = None) -> Config:
    """The MMEngine config of what ``phase`` trains (``module`` for ``incubate``): a pure function of ``cfg``.

    The growth peers (``stack``, ``grow``) train the full model end to end from a grown start: their recipe
    is the E2E phase's (``incubation.e2e``) with their own section (``incubation.stack`` / ``incubation.grow``,
    e.g. the epochs left of the budget after the meta model) merged over it.

    Raises:
        ValueError: an unknown phase, or ``assemble`` (which trains nothing).
        LayoutError: the layout does not fit the backbone, or the incubated or grown model is not an
            ImageClassifier.
    """
    if phase not in PHASES or phase == 'assemble':
        raise ValueError(f'phase must be one of {[p for p in PHASES if p != "assemble"]}, got {phase!r}')
    layout = build_layout(cfg)
    incubation = cfg.get('incubation') or {}
    recipe = copy.deepcopy(cfg)
    overrides = [incubation.get(phase) or {}]
    if phase in GROWN:
        overrides.insert(0, incubation.get('e2e') or {})
    if phase == 'meta' and incubation.get('meta_from'):  # a pretrained network's head warm-up, if any
        overrides.append(incubation.meta_from.get('warmup') or {})
    for key in ('incubation', 'runner_type'):
        recipe.pop(key, None)
    for override in overrides:
        recipe.merge_from_dict(override.to_dict() if isinstance(override, ConfigDict) else dict(override))
    if phase == 'meta' and incubation.get('meta_from'):  # what the meta model is made of is part of its recipe
        recipe.meta_from = {key: value for key, value in incubation.meta_from.items() if key not in META_FROM_FILES}

    model = recipe.model
    # out_indices the phase's own section sets count its network's blocks, else the full model's
    phase_outputs = 'out_indices' in (((incubation.get(phase) or {}).get('model') or {}).get('backbone') or {})
    spec_of(model.backbone).set_layout(model.backbone, phase_layout(layout, phase, module), layout, phase_outputs)
    drop_amp_settings_of_fp32(recipe.get('optim_wrapper'))  # an fp32 phase of a bf16 config
    if recipe.get('activation_checkpointing') == BLOCKS:  # every block of the network the phase trains
        recipe.activation_checkpointing = network_blocks(model)
    if phase == 'incubate':
        if model.type not in ('ImageClassifier', 'mmpretrain.ImageClassifier'):
            raise LayoutError(f'module incubation needs an ImageClassifier model, got model.type={model.type!r}')
        model.update(type='mmincubation.IncubationClassifier', module_depths=list(layout.depths),
                     stage_depths=list(layout.stage_depths), target_module=module,
                     module_init=incubation.get('module_init', 'scratch'))
        _split_for_dmt(recipe, incubation.get('dmt'), module, layout.num_modules)
    if phase in GROWN:
        if model.type not in ('ImageClassifier', 'mmpretrain.ImageClassifier'):
            raise LayoutError(f'the {phase} method needs an ImageClassifier model, got model.type={model.type!r}')
        model.update(type='mmincubation.GrownClassifier', module_depths=list(layout.depths),
                     stage_depths=list(layout.stage_depths), growth=phase)
    return recipe


#: Top-level settings of a recipe that do not change what a phase trains: where it writes, how it logs,
#: how it is launched (left out of its fingerprint).
UNTRAINED_SETTINGS = ('work_dir', 'launcher', 'log_level', 'log_processor', 'visualizer', 'vis_backends', 'env_cfg',
                      'experiment_name', 'filename', 'resume', 'load_from', 'custom_imports',
                      # how the processes are wired (set by the launcher: DDP on CPUs); one process or
                      # several train the same recipe, so module jobs may run on other machine counts
                      'model_wrapper_cfg', 'runner_type', 'strategy',
                      # recomputing activations in the backward pass gives the same losses and gradients
                      # (compat.turn_on_activation_checkpointing), so a run may switch it on to fit in memory
                      'activation_checkpointing',
                      # validation and test score the weights and leave the random streams as they were
                      # (RandomStateHook): they do not change what a phase trains
                      'val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg', 'test_dataloader', 'test_evaluator')
#: ``default_hooks`` that only log, time, draw or save (the checkpoint interval does not change the weights).
UNTRAINED_HOOKS = ('logger', 'timer', 'visualization', 'checkpoint')
#: The hooks the runner wires into every phase (:func:`~.incubation_runner.phase_hooks`, and the trackers' axis):
#: not part of a recipe.
WIRING_HOOKS = ('mmincubation.FiniteLossHook', 'mmincubation.PhaseRecordHook', 'mmincubation.ExportWeightsHook',
                'mmincubation.RandomStateHook', 'mmincubation.PipelineVisHook')
#: Settings, at any depth, that do not change what a phase trains: where the data set lies (moving it does not;
#: which images it takes, ``ann_file`` / ``data_prefix`` / ``indices``, does), the meta checkpoint's and a
#: ``Pretrained`` init's path (the files a phase is made from are recorded by their contents in the tag's
#: ``inputs``), how often it validates, and whether batches are copied to pinned memory.
PATH_SETTINGS = ('data_root', 'source_root', 'meta_checkpoint', 'checkpoint', 'val_interval', 'val_begin',
                 'pin_memory')


#: ``incubation.meta_from`` entries that are not part of the meta phase's recipe: the source file (its
#: contents are a recorded input) and what training it cost (reported, never trained on).
META_FROM_FILES = ('checkpoint', 'cost')


def _plain(value: object) -> object:
    """A config value as JSON-able plain data: dicts, lists, numbers, strings (anything else by ``repr``)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items() if key not in PATH_SETTINGS}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def recipe_fingerprint(recipe: Config) -> tuple[str, str]:
    """A phase recipe's canonical JSON (less :data:`UNTRAINED_SETTINGS`, :data:`UNTRAINED_HOOKS`,
    :data:`WIRING_HOOKS` and :data:`PATH_SETTINGS`) and its sha256: equal for recipes that train the same
    thing, and the same for a recipe and the run config the runner wires from it."""
    plain = _plain(recipe.to_dict() if isinstance(recipe, Config) else dict(recipe))
    for key in UNTRAINED_SETTINGS:
        plain.pop(key, None)
    hooks = plain.get('default_hooks') or {}
    for key in UNTRAINED_HOOKS:
        hooks.pop(key, None)
    hooks = [hook for hook in plain.pop('custom_hooks', None) or []
             if not (isinstance(hook, dict) and hook.get('type') in WIRING_HOOKS)]
    if hooks:
        plain['custom_hooks'] = hooks
    text = json.dumps(plain, sort_keys=True, separators=(',', ':'))
    return text, hashlib.sha256(text.encode()).hexdigest()
