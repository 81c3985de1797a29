"""A pretrained network as the meta model: its stem, K of its blocks, its final norm and its head.

Deep Incubation trains a small meta model (one block per module) from scratch before incubating the
modules. The paper's supplement names the obvious saving: a pretrained network of the same width
already is such a model. :func:`make_meta` takes one, keeps the stem (patch embedding, class token,
position embedding), K of its blocks (evenly spaced by default, or the indices given), the final norm
and, when its shapes fit the config's, the head, and returns a checkpoint tagged exactly like the
meta phase's product (``meta.mmincubation = {phase: 'meta', layout, holds: 'meta', ...}``): placed at
``<work_dir>/meta/meta.pth`` it replaces meta pretraining, for modules incubated from scratch and grown
from the meta model (``incubation.module_init='meta'``) alike.

Sources (read with torch's safe ``weights_only`` loader):
  * our own products: a meta, assembled, fine-tuned or E2E model (a single module or a hybrid is refused);
  * plain mmpretrain checkpoints: an ``ImageClassifier``'s ``state_dict`` or a bare backbone's keys
    (``patch_embed.*``, ``layers.N.*``, ...; these have no head);
  * official Deep Incubation checkpoints (``{'model': ..., 'model_stages': [...]}``) and timm ViT state
    dicts (bare or under ``state_dict``), through :mod:`mmincubation.convert_official`.

Every key of a source is classified (:func:`read_pretrained`): backbone, neck and head weights; EMA copies of
them, as mmcv 1.x's EMAHook keeps them (an ``ema_<key with '.' as '_'>`` buffer per parameter, beside the
weights) or MMEngine's (the checkpoint's ``ema_state_dict``); anything else is named in the log as foreign
and unused, never taken for the head. The raw weights are used unless the EMA copies are asked for
(``ema=True``, ``--ema``); EMA copies left unused are named in the log. A source whose used tensors hold
NaN or Inf is refused.

The meta model must be a ViT of mmpretrain's ``VisionTransformer`` family (blocks in
``backbone.layers``). A source of another width, patch size, input channel count or backbone kind is
refused, naming the file and the difference; a source whose image size differs is accepted, its
position embedding resized by the ViT itself (as mmpretrain does when loading). A head (the ``neck.*``
and ``head.*`` keys) whose shapes do not fit (another class count, or none) is replaced by the head of
the config's meta model built and initialised with the config's seed, so it needs training before
incubation (a head warm-up).

What the source cost to train is recorded with it (:func:`pretraining_cost`): it was paid before, and
reports count it apart from the pipeline's new cost.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.registry import DefaultScope
from torch import nn

from .backbones import BackboneSpec, resolve_arch, spec_of
from .checkpoint import (
    META_KEY,
    CheckpointError,
    check_finite,
    check_output,
    file_digest,
    load_weights,
    read_torch_file,
    save_atomic,
)
from .convert_official import (
    OFFICIAL_NAMING,
    _shown,
    check_official,
    convert_official,
    merge_stages,
    to_ours,
)
from .engine.runner.phase_config import build_layout, phase_recipe
from .engine.runner.records import RECORD_FILE, read_record
from .layout import LayoutError, ModuleLayout, check_state_dict
from .phases import PHASE_TABLE, Phase
from .tags import Tag

#: Key prefix of the backbone; the neck and head (:data:`NETWORK`'s others) count as the head.
BACKBONE = 'backbone.'
#: Key prefixes of an ``ImageClassifier``'s weights; a source's keys outside them are foreign, never used.
NETWORK = (BACKBONE, 'neck.', 'head.')
#: mmcv 1.x's EMAHook: a buffer ``ema_<name with '.' as '_'>`` per parameter, beside it in the state dict.
MMCV_EMA = 'ema_'
#: MMEngine's EMAHook: the averaged model's state dict (its ``module.<key>`` tensors and ``steps`` counter).
MMENGINE_EMA, EMA_MODULE, EMA_STEPS = 'ema_state_dict', 'module.', 'steps'

#: The tagged products whose training cost their pipeline's phase records tell: those of whole networks.
COSTED_PHASES = tuple(name for name, spec in PHASE_TABLE.items() if spec.holds in ('meta', 'full'))


@dataclass(frozen=True)
class PretrainedSource:
    """A pretrained network read from a file, in mmpretrain ``ImageClassifier`` keys.

    Attributes:
        path: the file.
        kind: what the file is, in words (e.g. ``'mmincubation e2e product'``, ``'timm ViT state dict'``).
        state_dict: its tensors keyed as an ``ImageClassifier`` (``backbone.*``, ``neck.*``, ``head.*``).
        record: its mmincubation tag (``meta.mmincubation``), None for other files.
        dataset_meta: the dataset description (class names) it was saved with, if any.
        weights: which weights ``state_dict`` holds where the file has two sets: ``'raw'`` or ``'ema'``.
        ema: the EMA copies the file holds, in words (how many, whose), None when it holds none.
        unused: the keys that are neither weights of the network nor EMA copies of them (foreign).
    """

    path: Path
    kind: str
    state_dict: dict[str, torch.Tensor]
    record: dict | None = None
    dataset_meta: dict | None = None
    weights: str = 'raw'
    ema: str | None = None
    unused: tuple[str, ...] = ()


def _is_timm(state_dict: Mapping[str, object]) -> bool:
    """timm / official ViT keys: a ``cls_token`` and ``blocks.N.*``, nothing under ``backbone.``."""
    return 'cls_token' in state_dict and any(OFFICIAL_NAMING.split(key) for key in state_dict)


def _split_ema(checkpoint: Mapping, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict, list[str], str]:
    """``state_dict`` split into the raw weights and their EMA copies (keyed as the weights they average).

    MMEngine's EMAHook saves the averaged model's state dict as the checkpoint's ``ema_state_dict`` and
    then swaps the two for deployment: ``state_dict`` holds the averaged weights, ``ema_state_dict`` the
    raw ones under ``module.``. mmcv 1.x's EMAHook keeps an ``ema_*`` buffer per parameter in the model,
    so in ``state_dict`` itself.

    Returns:
        ``(weights, averaged, unused, whose)``: the raw weights, the EMA copies of some of them, the keys of
        the EMA state that copy no weight (named as in the file), and the EMA hook in words.
    """
    ema_state = checkpoint.get(MMENGINE_EMA)
    if isinstance(ema_state, Mapping):
        raw = {key[len(EMA_MODULE):]: value for key, value in ema_state.items() if key.startswith(EMA_MODULE)
               and key[len(EMA_MODULE):] in state_dict and isinstance(value, torch.Tensor)}
        unused = [f'{MMENGINE_EMA}.{key}' for key in ema_state
                  if key != EMA_STEPS and not (key.startswith(EMA_MODULE) and key[len(EMA_MODULE):] in raw)]
        return ({**state_dict, **raw}, {key: state_dict[key] for key in raw}, unused,
                f'MMEngine EMAHook: averaged in state_dict, raw in {MMENGINE_EMA}')
    names = {MMCV_EMA + key.replace('.', '_'): key for key in state_dict}
    buffers = {key for key in state_dict if key in names}
    return ({key: value for key, value in state_dict.items() if key not in buffers},
            {names[key]: state_dict[key] for key in buffers}, [], 'mmcv 1.x EMAHook ema_* buffers')


def _as_backbone(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bare backbone's keys as an ``ImageClassifier``'s (``backbone.`` prefixed)."""
    return {BACKBONE + key: value for key, value in state_dict.items()}


def read_pretrained(path: str | os.PathLike, ema: bool = False) -> PretrainedSource:
    """Read any supported pretrained network (see the module docs) as ``ImageClassifier`` keys.

    Every key is classified: weights of the network (``backbone.*``, ``neck.*``, ``head.*``, after
    renaming a bare backbone's or timm's keys), EMA copies of them (:func:`_split_ema`), or foreign
    (:attr:`PretrainedSource.unused`, left out of ``state_dict``).

    Args:
        path: the file.
        ema: take the EMA copies instead of the raw weights they average (raw weights without a copy, e.g.
            buffers mmcv 1.x does not average, stay as they are).

    Raises:
        CheckpointError: naming ``path`` when it is unreadable, not a network (a single module, a
            hybrid, a list...), an official / timm checkpoint that is not a valid ViT, asked for EMA
            weights it does not hold, or when the tensors used hold NaN or Inf.
    """
    path = Path(path)
    # Official and timm training checkpoints also pickle their ``args`` (an argparse.Namespace, a plain
    # attribute bag: see convert_official.load_official), which is all the safe loader is allowed here.
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = read_torch_file(path, 'pretrained checkpoint', mmap=zipfile.is_zipfile(path))
        official = isinstance(raw, Mapping) and isinstance(raw.get('model'), Mapping)
        checkpoint = dict(state_dict=convert_official(path)['state_dict'], meta={}) if official else load_weights(path)
    meta = checkpoint['meta']
    weights, averaged, unused, whose = _split_ema(raw, checkpoint['state_dict'])
    record, tag, dataset_meta, rename = meta.get(META_KEY), None, meta.get('dataset_meta'), dict
    if official:
        kind, dataset_meta = 'official Deep Incubation checkpoint', None
    elif isinstance(record, Mapping):
        holds = Tag.from_dict(record).holds
        if holds not in ('full', 'meta'):
            what = {'module': f'a single incubated module (module {record.get("module")})',
                    'hybrid': 'a hybrid of an unfinished module incubation'}.get(holds, f'{holds!r} weights')
            raise CheckpointError(f'pretrained checkpoint {path} holds {what}, written by the "{record.get("phase")}" '
                                  f'phase of layout {record.get("layout")}; expected a whole network (a meta, '
                                  'assembled, fine-tuned or E2E model)')
        kind, tag = f'mmincubation {record.get("phase")} product', dict(record)
    elif _is_timm(weights):
        source = f'pretrained checkpoint {path} (timm keys)'
        weights, layout = merge_stages([weights], source)
        check_official(weights, layout.total_depth, source)
        kind, rename, dataset_meta = 'timm ViT state dict', to_ours, None
    elif not any(key.startswith(BACKBONE) for key in weights):
        kind, rename, dataset_meta = 'mmpretrain backbone (no head)', _as_backbone, None
    else:
        kind = 'mmpretrain classifier'
    weights, averaged = rename(weights), rename(averaged)
    if ema and not averaged:
        raise CheckpointError(f'pretrained checkpoint {path} ({kind}) holds no EMA copies of its weights (neither '
                              f'mmcv 1.x ema_* buffers nor an MMEngine {MMENGINE_EMA}); use its weights (no --ema)')
    used = {**weights, **averaged} if ema else weights
    unused = sorted(key for key in used if not key.startswith(NETWORK)) + unused
    state_dict = {key: value for key, value in used.items() if key.startswith(NETWORK)}
    check_finite(state_dict, f'pretrained checkpoint {path}')
    return PretrainedSource(path, kind, state_dict, tag, dataset_meta, 'ema' if ema else 'raw',
                            f'{len(averaged)} EMA copies ({whose})' if averaged else None, tuple(unused))


def trained_for(phase: Phase, num_modules: int) -> list[Phase]:
    """The phases whose training a product of ``phase`` embodies: its own (the assembly trains nothing)
    and, recursively, those of the products it was made from (:meth:`Phase.inputs`), in pipeline order."""
    inputs = [trained for made_from in phase.inputs(num_modules) for trained in trained_for(made_from, num_modules)]
    return list(dict.fromkeys(inputs + ([] if phase.name == 'assemble' else [phase])))


def pretraining_cost(source: PretrainedSource, cost: float | None = None) -> dict:
    """What training ``source`` cost, in block-images (images seen x blocks trained, summed over phases).

    ``cost`` given by the user wins. Otherwise, for one of our products still where its pipeline wrote
    it (``meta/meta.pth``, ``assembled.pth``, ``finetune/finetuned.pth``, ``e2e/e2e.pth`` of a work
    dir), the phase record of every phase it embodies (:func:`trained_for`: the meta model; it
    and the K modules; those and the fine-tune; the E2E run) are summed. A moved or renamed file, or a
    missing or unfinished record, leaves the cost unknown (None): it is then not counted anywhere.

    Returns:
        ``dict(cost=float | None, wall_seconds=float | None, cost_from=str)``, where ``cost_from``
        is ``'given'``, ``'unknown'`` or the records' paths (comma-separated).
    """
    if cost is not None:
        return dict(cost=float(cost), wall_seconds=None, cost_from='given')
    unknown = dict(cost=None, wall_seconds=None, cost_from='unknown')
    name = (source.record or {}).get('phase')
    if name not in COSTED_PHASES:
        return unknown
    phase, path = Phase(name), source.path.resolve()
    work_dir = path.parent if name == 'assemble' else path.parent.parent
    if phase.product(work_dir) != path:
        return unknown
    files = [trained.work_dir(work_dir) / RECORD_FILE
             for trained in trained_for(phase, len(source.record.get('layout') or []))]
    if not all(file.is_file() for file in files):
        return unknown
    records = [read_record(file) for file in files]
    if not all(record.get('finished') for record in records):
        return unknown
    # a meta model that was itself made of a pretrained network carries that network's cost
    earlier = [record['pretrained'].get('cost') for record in records if record.get('pretrained')]
    if None in earlier:
        return unknown
    return dict(cost=float(sum(r['cost'] for r in records) + sum(earlier)),
                wall_seconds=float(sum(r['wall_seconds'] for r in records)),
                cost_from=', '.join(map(str, files)))


def evenly_spaced(depth: int, count: int) -> list[int]:
    """``count`` block indices spread over ``depth`` blocks, first and last included (rounded half up).

    E.g. 8 blocks, 4 kept: ``[0, 2, 5, 7]``; 6 blocks, 3 kept: ``[0, 3, 5]``; one kept: ``[0]``.
    """
    if count == 1:
        return [0]
    return [(2 * i * (depth - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]


def check_blocks(blocks: Sequence[int], depth: int, count: int, path: Path) -> list[int]:
    """``blocks`` as a list, checked: ``count`` strictly increasing indices below ``depth``.

    Raises:
        LayoutError: naming the blocks and what was expected.
    """
    blocks = list(blocks)
    if len(blocks) != count or not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks):
        raise LayoutError(f'blocks {blocks} of pretrained checkpoint {path}: expected {count} block indices, '
                          'one per module of the config')
    if any(b < 0 or b >= depth for b in blocks):
        raise LayoutError(f'blocks {blocks}: pretrained checkpoint {path} has blocks 0..{depth - 1}')
    if any(a >= b for a, b in zip(blocks, blocks[1:])):
        raise LayoutError(f'blocks {blocks} of pretrained checkpoint {path} must be strictly increasing '
                          '(meta block k stands in for module k)')
    return blocks


def build_meta_model(cfg: Config) -> nn.Module:
    """The config's meta model (``phase_recipe(cfg, 'meta')``), initialised with the config's seed.

    Seeded with ``randomness.seed`` (0 if unset) inside a forked random state, so the same config
    always gives the same fresh head and the caller's random state is untouched. MMEngine's report of
    how each parameter was initialised (a few lines per tensor) is left out of the log.
    """
    from mmpretrain.registry import MODELS

    seed = (cfg.get('randomness') or {}).get('seed') or 0
    logger = MMLogger.get_current_instance()
    level = logger.level
    scope = cfg.get('default_scope', 'mmpretrain')
    with torch.random.fork_rng(devices=[]), DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(seed)
        model = MODELS.build(phase_recipe(cfg, 'meta').model)
        logger.setLevel(logging.WARNING)
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    return model


def _check_spec(spec: BackboneSpec, cfg: Config) -> None:
    """Refuse backbones whose blocks depend on their place (Swin's window shifts): a pretrained block moved
    to another place would compute something else."""
    if spec.position_dependent:
        raise LayoutError(f'a pretrained meta model is made of backbones whose blocks do not depend on their '
                          f'place; the config\'s model.backbone {cfg.model.backbone.type} shifts its windows by '
                          'the block\'s place in its stage')


def _source_stage_depths(source: PretrainedSource, spec: BackboneSpec, backbone_type: str,
                         num_stages: int) -> tuple[int, ...]:
    """Blocks of each stage of ``source`` in the spec's naming; each stage's indices must be 0..N-1.

    Raises:
        CheckpointError: no blocks of that naming, other stages than the config's, or gaps in the indices.
    """
    naming = spec.naming
    indices: dict[int, set[int]] = {}
    for key in source.state_dict:
        split = naming.split(key)
        if split is not None:
            indices.setdefault(split.stage, set()).add(split.index)
    if not indices:
        found = sorted({'.'.join(key.split('.')[:2]) for key in source.state_dict if key.startswith(BACKBONE)})
        blocks = naming.block_key.format(stage='S', block='N')
        raise CheckpointError(f'pretrained checkpoint {source.path} ({source.kind}) holds no {backbone_type} blocks '
                              f'({blocks}*): its backbone has {found[:6] or "no keys"}; expected the config\'s '
                              'backbone kind')
    if sorted(indices) != list(range(num_stages)):
        raise CheckpointError(f'pretrained checkpoint {source.path} has blocks in stages {sorted(indices)}, the '
                              f'config\'s backbone {num_stages} stages')
    for stage, found in sorted(indices.items()):
        if found != set(range(len(found))):
            where = f' of stage {stage}' if num_stages > 1 else ''
            raise CheckpointError(f'pretrained checkpoint {source.path}: block indices{where} {sorted(found)} are '
                                  f'not 0..{len(found) - 1}')
    return tuple(len(indices[stage]) for stage in range(num_stages))


def default_blocks(source_stages: Sequence[int], meta_stages: Sequence[int]) -> list[int]:
    """Global indices of the source's blocks that become the meta model's: in each stage, as many as the meta
    model has there, :func:`evenly_spaced` (a one-stage backbone: K blocks, first and last included)."""
    starts = [sum(source_stages[:stage]) for stage in range(len(source_stages))]
    return [start + b for start, depth, count in zip(starts, source_stages, meta_stages)
            for b in evenly_spaced(depth, count)]


def _widening_factor(source: PretrainedSource, reference: Mapping[str, torch.Tensor], spec: BackboneSpec,
                     cfg: Config) -> int | None:
    """How many times narrower than the config the source is, when its spec can widen it exactly: its width
    divides the config's, and so does the number of heads (the head size is kept); else None (other widths
    are then named by :func:`_check_patch_embed`)."""
    patch_embed = BACKBONE + str(spec.patch_weight)
    if spec.widen is None or patch_embed not in source.state_dict or patch_embed not in reference:
        return None
    have, want = source.state_dict[patch_embed].shape[0], reference[patch_embed].shape[0]
    heads = resolve_arch(cfg.model.backbone).get('num_heads')
    if have >= want or want % have or not isinstance(heads, int) or heads % (want // have):
        return None
    return want // have


def _check_patch_embed(source: PretrainedSource, reference: Mapping[str, torch.Tensor], spec: BackboneSpec) -> None:
    """Refuse another width, input channel count or patch size, named as such (read from the patch embedding)."""
    patch_embed = BACKBONE + str(spec.patch_weight)
    if patch_embed not in source.state_dict or patch_embed not in reference:
        return  # a missing key is named by check_state_dict
    found, wanted = tuple(source.state_dict[patch_embed].shape), tuple(reference[patch_embed].shape)
    if len(found) != 4 or found == wanted:
        return
    width, patch_size = spec.patch_settings
    what = [f'width {found[0]} vs the config\'s {wanted[0]} (model.backbone.{width})'] * (found[0] != wanted[0])
    what += [f'{found[1]} input channels vs {wanted[1]} (model.backbone.in_channels)'] * (found[1] != wanted[1])
    what += [f'patch size {found[2]}x{found[3]} vs {wanted[2]}x{wanted[3]} (model.backbone.{patch_size})'] * (
        found[2:] != wanted[2:])
    raise CheckpointError(f'pretrained checkpoint {source.path} ({source.kind}) does not fit the config: '
                          f'{"; ".join(what)} ({patch_embed} {found} vs {wanted})')


def _head_misfit(source: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> str | None:
    """Why the source's head (its neck and head keys: all it holds outside the backbone) cannot be reused,
    or None when it can."""
    head = {key: value for key, value in source.items() if not key.startswith(BACKBONE)}
    wanted = {key: value for key, value in reference.items() if not key.startswith(BACKBONE)}
    if not head:
        return 'the source has no head'
    try:
        check_state_dict(head, wanted, source='the source\'s head')
    except LayoutError as error:
        return str(error).replace(' (another width or patch size?)', '')
    return None


def make_meta(source: str | os.PathLike, cfg: Config, blocks: Sequence[int] | None = None,
              cost: float | None = None, ema: bool = False, recipe: tuple[str, str] | None = None) -> dict:
    """A meta-model checkpoint for ``cfg`` made of a pretrained network of the same width.

    Args:
        source: the pretrained checkpoint (see the module docs for the formats).
        cfg: the whole-pipeline incubation config; its meta model (K blocks, ``phase_recipe(cfg, 'meta')``)
            is what the checkpoint must fit.
        blocks: the source's block indices that become meta blocks 0..K-1 (strictly increasing);
            default :func:`evenly_spaced`, first and last included.
        cost: what training the source cost in block-images, if known; default: read from its phase
            records when it is one of our products (:func:`pretraining_cost`).
        ema: use the source's EMA copies of its weights (mmcv 1.x ``ema_*`` buffers, MMEngine's
            ``ema_state_dict``) instead of the raw weights; without it, EMA copies found are named in the
            log and left unused.
        recipe: the meta phase's recipe and fingerprint the pipeline made it for
            (:func:`~mmincubation.engine.runner.phase_config.recipe_fingerprint`), recorded in the tag.

    Returns:
        ``dict(meta=dict(mmincubation=record[, dataset_meta]), state_dict=...)``: the meta model's keys
        exactly, in the meta model's dtype. ``record`` is the meta phase's tag (``phase='meta'``, the
        full model's layout as :meth:`ModuleLayout.tag` writes it, ``holds='meta'``) plus ``pretrained``:
        ``dict(checkpoint, kind, weights='raw' | 'ema', depth, blocks, head='reused' | 'new', cost,
        wall_seconds, cost_from)``.

    Raises:
        CheckpointError: naming ``source`` and the difference: unreadable, not a whole network, no blocks
            of the config's backbone kind, another width / patch size / input channels, other keys or shapes,
            NaN or Inf in the tensors used, ``ema`` asked of a source without EMA copies.
        LayoutError: the config's backbone is not a ViT, or ``blocks`` is not K strictly increasing
            indices of the source's blocks (a source shallower than K is refused this way too).
    """
    layout = build_layout(cfg)
    model = build_meta_model(cfg)
    reference = model.state_dict()
    spec = spec_of(cfg.model.backbone)
    _check_spec(spec, cfg)
    pretrained = read_pretrained(source, ema)
    if pretrained.ema:
        print_log(f'pretrained checkpoint {pretrained.path} holds {pretrained.ema}: ' + (
            'used instead of the raw weights' if ema else 'ignored, the raw weights are used (--ema, '
            'make_meta(ema=True), uses them)'), logger='current')
    if pretrained.unused:
        print_log(f'pretrained checkpoint {pretrained.path}: {len(pretrained.unused)} foreign keys (neither backbone, '
                  f'neck or head weights nor EMA copies of them) left unused: {_shown(pretrained.unused)}',
                  logger='current', level=logging.WARNING)
    meta = layout.meta()
    source_stages = _source_stage_depths(pretrained, spec, cfg.model.backbone.type, len(meta.stage_depths))
    depth = sum(source_stages)
    factor = _widening_factor(pretrained, reference, spec, cfg)
    widened = spec.widen(pretrained.state_dict, factor) if factor else {}
    if any(tuple(value.shape) != tuple(reference[key].shape) for key, value in widened.items() if key in reference):
        factor = None  # widened, it still has other shapes (another FFN ratio): named as a narrower network below
    if factor:
        pretrained = dataclasses.replace(pretrained, state_dict=widened)
        print_log(f'pretrained checkpoint {pretrained.path}: widened {factor} times to the config\'s width (heads '
                  f'and FFN units duplicated, the same function), assuming it has '
                  f'{resolve_arch(cfg.model.backbone)["num_heads"] // factor} heads', logger='current')
    _check_patch_embed(pretrained, reference, spec)
    if blocks is None:
        short = [stage for stage, (have, need) in enumerate(zip(source_stages, meta.stage_depths)) if have < need]
        if short and len(source_stages) == 1:
            raise LayoutError(f'pretrained checkpoint {pretrained.path} has {depth} blocks, fewer than the '
                              f'{layout.num_modules} the meta model needs (one per module): use fewer modules')
        if short:
            raise LayoutError(f'pretrained checkpoint {pretrained.path} has stages of {list(source_stages)} blocks, '
                              f'fewer than the meta model needs (one per module in each stage: '
                              f'{list(meta.stage_depths)}): use fewer modules')
        blocks = default_blocks(source_stages, meta.stage_depths)
    blocks = check_blocks(blocks, depth, meta.total_depth, pretrained.path)
    source_layout = ModuleLayout((depth, ), spec.naming, source_stages)
    chosen = [source_layout.stage_of(b) for b in blocks]
    if len(meta.stage_depths) > 1 and [stage for stage, _ in chosen] != \
            [meta.stage_of(k)[0] for k in range(meta.total_depth)]:
        raise LayoutError(f'blocks {blocks} of pretrained checkpoint {pretrained.path} (stages {list(source_stages)}) '
                          f'must give each stage as many blocks as the meta model has there: {list(meta.stage_depths)}')
    renamed = {place: meta.stage_of(k) for k, place in enumerate(chosen)}
    state = {}
    for key, value in pretrained.state_dict.items():
        split = spec.naming.split(key)
        if split is None:
            state[key] = value
        elif (split.stage, split.index) in renamed:
            state[spec.naming.join(*renamed[split.stage, split.index], split.rest)] = value
    backbone = {key: value for key, value in state.items() if key.startswith(BACKBONE)}
    wanted = {key: value for key, value in reference.items() if key.startswith(BACKBONE)}
    resized = [key for key in (BACKBONE + name for name in spec.resized_on_load) if key in backbone and key in wanted]
    for key in resized:  # the backbone resizes these itself on loading (a ViT its position embedding)
        backbone[key] = wanted[key]
    try:
        check_state_dict(backbone, wanted, source=f'pretrained checkpoint {pretrained.path} ({pretrained.kind}, '
                                                  f'blocks {blocks})')
    except LayoutError as error:
        raise CheckpointError(str(error)) from error

    misfit = _head_misfit(state, reference)
    if misfit is None:
        print_log(f'head reused from {pretrained.path}', logger='current')
    else:
        print_log(f'head newly initialised (the config\'s meta model, seeded): {misfit}; train it before '
                  'incubating the modules (a head warm-up)', logger='current')
        state = {key: value for key, value in state.items() if key.startswith(BACKBONE)}
        state.update({key: value for key, value in reference.items() if not key.startswith(BACKBONE)})
    try:  # copies by value; the ViT resizes pos_embed to its token grid if it must
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as error:  # a position embedding of a grid the ViT cannot resize from
        shapes = ', '.join(f'{key} of shape {tuple(pretrained.state_dict[key].shape)} to {tuple(reference[key].shape)}'
                           for key in resized)
        raise CheckpointError(f'pretrained checkpoint {pretrained.path}: cannot resize {shapes or "its tensors"}: '
                              f'{" ".join(str(error).split())[:200]}') from error

    made_of = dict(checkpoint=str(pretrained.path), kind=pretrained.kind, weights=pretrained.weights, depth=depth,
                   blocks=blocks, head='new' if misfit else 'reused', **pretraining_cost(pretrained, cost),
                   **({'widened': factor} if factor else {}))
    recorded = dict(zip(('recipe', 'fingerprint'), recipe)) if recipe else {}
    tag = Tag.of_layout('meta', layout.tag(), inputs=dict(pretrained=file_digest(pretrained.path)),
                        extra=dict(pretrained=made_of), **recorded)
    meta = tag.meta(**({'dataset_meta': pretrained.dataset_meta} if misfit is None and pretrained.dataset_meta else {}))
    return dict(meta=meta, state_dict={key: value.detach().clone() for key, value in model.state_dict().items()})


def write_meta(source: str | os.PathLike, cfg: Config, out: str | os.PathLike, blocks: Sequence[int] | None = None,
               cost: float | None = None, ema: bool = False, recipe: tuple[str, str] | None = None) -> dict:
    """:func:`make_meta` written to ``out`` atomically; nothing is written if anything is wrong.

    Returns the tag's record (``meta.mmincubation``).

    Raises:
        CheckpointError: before anything is read, when ``out`` is a folder or the source itself
            (:func:`~mmincubation.checkpoint.check_output`) or exists at all: no file is replaced, since
            later phases may have been made from a meta model; then what :func:`make_meta` raises.
    """
    check_output(out, [source], replace=False)
    checkpoint = make_meta(source, cfg, blocks, cost, ema, recipe)
    save_atomic(checkpoint, out)
    return checkpoint['meta'][META_KEY]


def pretrained_record(meta_checkpoint: str | os.PathLike) -> dict | None:
    """The ``pretrained`` entry of a meta checkpoint's tag (what it was made of, what that cost), or
    None for a meta model trained by the meta phase."""
    record = load_weights(meta_checkpoint)['meta'].get(META_KEY)
    found = record.get('pretrained') if isinstance(record, Mapping) else None
    return dict(found) if isinstance(found, Mapping) else None
