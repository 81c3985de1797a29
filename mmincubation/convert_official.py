"""Conversion of the official Deep Incubation checkpoints (LeapLabTHU/Deep-Incubation) to ours.

The official code (timm-style ``VisionTransformer`` with ``divided_depths``) saves::

    {'model': state_dict, 'model_stages': [stage_state_dict, ...], 'optimizer': ..., ...}

``model_stages[k]`` is module ``k``'s own state dict with LOCAL keys: block indices restart at 0 in
every stage, the stem (``patch_embed``, ``cls_token``, ``pos_embed``) is in stage 0 and the tail
(``norm``, ``head``) in the last stage. ``model`` holds the whole network with global block indices
and, because the stages share the network's modules, a duplicate ``stages.<k>.*`` entry for every
parameter. The first official release saved ``model_stages`` as an empty list (a ``hasattr`` typo),
so ``model`` is the fallback. A meta model is the same format with one block per stage.

The result is the checkpoint of an mmpretrain ``ImageClassifier`` (``VisionTransformer`` backbone,
``VisionTransformerClsHead``) tagged like our own phase products, so that a converted meta model
feeds :meth:`~mmincubation.models.IncubationClassifier.load_meta_modules` and a converted full model
fine-tunes or evaluates like an assembled one. Architecture hyper-parameters that a state dict does
not hold (heads, LayerNorm eps: 1e-6 for official B/L, 1e-5 for H) must come from the config.
"""
from __future__ import annotations

import argparse
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .backbones.vit import BLOCK_TO_OURS, OFFICIAL_NAMING, OFFICIAL_TO_OURS, OPTIONAL_BLOCK_KEYS, VIT
from .checkpoint import CheckpointError, check_finite, check_output, read_torch_file, save_atomic
from .layout import LayoutError, ModuleLayout, check_state_dict
from .tags import Tag

#: Expected shapes: C embed dims, F feed-forward dims, N classes, None any size.
SHAPES = {
    'cls_token': (1, 1, 'C'), 'pos_embed': (1, None, 'C'),
    'patch_embed.proj.weight': ('C', None, None, None), 'patch_embed.proj.bias': ('C', ),
    'norm.weight': ('C', ), 'norm.bias': ('C', ), 'head.weight': ('N', 'C'), 'head.bias': ('N', ),
    'norm1.weight': ('C', ), 'norm1.bias': ('C', ), 'attn.qkv.weight': ('3C', 'C'), 'attn.qkv.bias': ('3C', ),
    'attn.proj.weight': ('C', 'C'), 'attn.proj.bias': ('C', ), 'norm2.weight': ('C', ), 'norm2.bias': ('C', ),
    'mlp.fc1.weight': ('F', 'C'), 'mlp.fc1.bias': ('F', ), 'mlp.fc2.weight': ('C', 'F'), 'mlp.fc2.bias': ('C', ),
}

#: ``model``'s duplicates of the stages' parameters; only their key structure is ever read.
DUPLICATE = re.compile(r'stages\.(\d+)\.')


def load_official(path: str | os.PathLike) -> dict:
    """Load an official checkpoint with torch's safe (``weights_only``) unpickler.

    Official files also pickle the training ``args`` (an ``argparse.Namespace``), which the safe
    unpickler refuses by default. A Namespace is a plain attribute bag (restored by updating its
    ``__dict__``; no code of the file runs), so it alone is allow-listed rather than falling back to
    the unsafe loader. Zip-format files are memory-mapped: the optimizer state is never read.
    """
    path = Path(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = read_torch_file(path, 'official checkpoint', mmap=zipfile.is_zipfile(path))
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get('model'), Mapping):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        hint = ''
        if isinstance(checkpoint, Mapping) and 'state_dict' in checkpoint:
            hint = ('; it is already an mmpretrain/mmincubation checkpoint ("state_dict"): use it as it is, '
                    'nothing to convert')
        elif isinstance(checkpoint, Mapping) and checkpoint and all(
                isinstance(value, torch.Tensor) for value in checkpoint.values()):
            hint = '; a bare state dict: save it as {"model": state_dict} to convert it as the first release\'s format'
        raise CheckpointError(f'{path} is not an official Deep Incubation checkpoint: expected a dict with '
                              f'"model" (and "model_stages"), found {found}{hint}')
    return dict(checkpoint)


def official_stages(checkpoint: Mapping, path: str | os.PathLike) -> tuple[list[dict], bool]:
    """The stage state dicts (local keys), and whether they came from ``model_stages``.

    An empty (or absent) ``model_stages`` means the first release's format: ``model`` without its
    ``stages.*`` duplicates is then the only stage, with global block indices.
    """
    stages = checkpoint.get('model_stages') or []
    if not isinstance(stages, Sequence) or not all(isinstance(stage, Mapping) for stage in stages):
        raise CheckpointError(f'{path}: "model_stages" must be a list of state dicts')
    if stages:
        return [dict(stage) for stage in stages], True
    model = {key: value for key, value in checkpoint['model'].items() if not DUPLICATE.match(key)}
    return [model], False


def stage_depth(stage: Mapping[str, object], source: str) -> int:
    """Number of blocks in a stage, whose block indices must be exactly 0..depth-1."""
    indices = {block.index for block in map(OFFICIAL_NAMING.split, stage) if block is not None}
    if indices != set(range(len(indices))):
        raise CheckpointError(f'{source}: block indices {sorted(indices)} are not 0..{len(indices) - 1}')
    if not indices:
        raise CheckpointError(f'{source} holds no blocks ({OFFICIAL_NAMING.block_key.format(block="N")}*)')
    return len(indices)


def merge_stages(stages: Sequence[Mapping[str, object]], source: str) -> tuple[dict, ModuleLayout]:
    """Re-key local stage state dicts to one state dict with global block indices.

    Returns it with the layout of the stage depths. Each key must belong to its stage: stem keys
    to the first, tail keys to the last, so a key filed in the wrong stage is caught here.
    """
    depths = [stage_depth(stage, f'{source} stage {k}') for k, stage in enumerate(stages)]
    layout = ModuleLayout(tuple(depths), OFFICIAL_NAMING)
    merged = {}
    for k, stage in enumerate(stages):
        for key, value in stage.items():
            block = OFFICIAL_NAMING.split(key)
            if block is not None:
                key = OFFICIAL_NAMING.join(0, layout.first_block(k) + block.index, block.rest)
            try:
                owner = layout.module_of(key)
            except KeyError as error:
                raise CheckpointError(f'{source} stage {k}: unknown key {key!r}; expected blocks.N.* or '
                                      f'one of {list(OFFICIAL_TO_OURS)}') from error
            if owner != k:
                raise CheckpointError(f'{source} stage {k} holds {key!r}, which belongs to stage {owner}')
            merged[key] = value
    return merged, layout


def duplicate_depths(model: Mapping[str, object]) -> tuple[int, ...] | None:
    """Stage depths read from the key structure of ``model``'s ``stages.<k>.blocks.<i>.*`` duplicates."""
    blocks: dict[int, set[int]] = {}
    for key in model:
        match = DUPLICATE.match(key)
        if match:
            block = OFFICIAL_NAMING.split(key[match.end():])
            blocks.setdefault(int(match.group(1)), set())
            if block is not None:
                blocks[int(match.group(1))].add(block.index)
    if not blocks or sorted(blocks) != list(range(len(blocks))) or not all(blocks.values()):
        return None
    return tuple(len(blocks[k]) for k in range(len(blocks)))


def check_official(state: Mapping[str, torch.Tensor], depth: int, source: str) -> None:
    """Raise a :class:`CheckpointError` naming every missing, unknown or mis-shaped official key.

    Every block needs the same keys as a timm ``Block`` (``attn.qkv.bias`` in all blocks or in
    none) and consistent shapes, e.g. ``attn.qkv.weight`` must be ``(3C, C)`` for the width ``C``
    of ``cls_token``; otherwise the conversion would produce a model that cannot load. Block
    indices in the messages are global, as in the file's ``model``.
    """
    with_bias = OFFICIAL_NAMING.join(0, 0, 'attn.qkv.bias') in state
    expected = list(OFFICIAL_TO_OURS)
    expected += [OFFICIAL_NAMING.join(0, i, rest) for i in range(depth) for rest in BLOCK_TO_OURS
                 if with_bias or rest not in OPTIONAL_BLOCK_KEYS]
    missing = [key for key in expected if key not in state]
    unknown = sorted(set(state) - set(expected))
    not_tensors = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    problems = []
    if not_tensors:
        problems.append(f'values that are not tensors: {_shown(not_tensors)}')
    if missing:
        problems.append(f'missing keys: {_shown(missing)}')
    if unknown:
        problems.append(f'unknown keys: {_shown(unknown)}')
    if not problems:
        problems = _shape_problems(state)
    if problems:
        raise CheckpointError(f'{source} is not a valid official ViT: ' + '; '.join(problems))


def _shape_problems(state: Mapping[str, torch.Tensor]) -> list[str]:
    sizes = dict(C=state['cls_token'].shape[-1], F=state[OFFICIAL_NAMING.join(0, 0, 'mlp.fc1.weight')].shape[0],
                 N=state['head.weight'].shape[0])
    sizes['3C'] = 3 * sizes['C']
    problems = []
    for key, value in state.items():
        block = OFFICIAL_NAMING.split(key)
        spec = SHAPES[block.rest if block else key]
        expected = tuple(sizes[s] if isinstance(s, str) else s for s in spec)
        shape = tuple(value.shape)
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
            wanted = tuple('*' if e is None else e for e in expected)
            problems.append(f'{key} has shape {shape}, expected {wanted} (C={sizes["C"]} from cls_token, '
                            f'F={sizes["F"]} from blocks.0.mlp.fc1.weight, N={sizes["N"]} from head.weight)')
    return problems[:8]


def _shown(keys: Sequence[str]) -> str:
    return ', '.join(keys[:8]) + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')


def to_ours(state: Mapping[str, object]) -> dict:
    """Rename a checked official state dict (global block indices) to mmpretrain's ViT keys."""
    converted = {}
    for key, value in state.items():
        block = OFFICIAL_NAMING.split(key)
        new = VIT.naming.join(0, block.index, BLOCK_TO_OURS[block.rest]) if block else OFFICIAL_TO_OURS[key]
        converted[new] = value
    return converted


def choose_layout(blocks: int, file_depths: tuple[int, ...] | None, meta: bool,
                  module_depths: Sequence[int] | None, full_depth: int | None, source: str) -> ModuleLayout:
    """The layout to record: the full model's module depths for a meta model, else the stages'.

    A meta model's file knows only the number of modules, so the full depths must be given;
    depths given for a full model must agree with the blocks (and stages) in the file.
    """
    if meta:
        if file_depths is not None and any(d != 1 for d in file_depths):
            raise CheckpointError(f'{source} is not a meta model: its stages have {list(file_depths)} blocks, '
                                  'a meta model has one per stage')
        if module_depths is not None:
            layout = ModuleLayout(tuple(module_depths), VIT.naming)
        elif full_depth is not None:
            layout = ModuleLayout.uniform(full_depth, blocks, VIT.naming)
        else:
            raise CheckpointError(f'{source}: converting a meta model needs the full model\'s module depths '
                                  '(--module-depths, --full-depth or --config)')
        if layout.num_modules != blocks:
            raise CheckpointError(f'{source} is a meta model of {blocks} modules but the module depths '
                                  f'{list(layout.depths)} have {layout.num_modules}')
        return layout
    if full_depth is not None and full_depth != blocks:
        raise CheckpointError(f'{source} has {blocks} blocks, not the --full-depth {full_depth}')
    if module_depths is None:
        return ModuleLayout(file_depths or (blocks, ), VIT.naming)
    layout = ModuleLayout(tuple(module_depths), VIT.naming)
    if layout.total_depth != blocks:
        raise CheckpointError(f'{source} has {blocks} blocks but the module depths {list(layout.depths)} '
                              f'add up to {layout.total_depth}')
    if file_depths is not None and tuple(file_depths) != layout.depths:
        raise CheckpointError(f'{source} was trained with modules of {list(file_depths)} blocks, '
                              f'not {list(layout.depths)}')
    return layout


def convert_official(src: str | os.PathLike, meta: bool = False, module_depths: Sequence[int] | None = None,
                     full_depth: int | None = None, reference: Mapping[str, object] | None = None) -> dict:
    """Convert an official checkpoint to ``{'meta': {'mmincubation': record}, 'state_dict': ...}``.

    The record is ``phase='meta'`` with the full model's layout for a meta model (what
    ``load_meta_modules`` expects), else ``phase='assemble'`` with the stages' depths. With
    ``reference`` (state dict of the target model, or tensors of its shapes) keys and shapes are
    checked against it too, so a width, depth or qkv-bias mismatch is caught before writing.
    """
    checkpoint = load_official(src)
    stages, from_stages = official_stages(checkpoint, src)
    source = f'{src} ({"model_stages" if from_stages else "model"})'
    state, stage_layout = merge_stages(stages, source)
    check_official(state, stage_layout.total_depth, source)
    file_depths = stage_layout.depths if from_stages else duplicate_depths(checkpoint['model'])
    try:
        layout = choose_layout(stage_layout.total_depth, file_depths, meta, module_depths, full_depth, str(src))
    except LayoutError as error:
        raise CheckpointError(f'{src}: {error}') from error
    state = to_ours(state)
    if reference is not None:
        try:
            check_state_dict(state, reference, source=f'converted official checkpoint {src}')
        except LayoutError as error:
            looks_meta = not meta and file_depths is not None and len(file_depths) > 1 and set(file_depths) == {1}
            raise CheckpointError(str(error) + ('; the file has one block per stage, like a meta model: '
                                                'pass --meta (meta=True)' if looks_meta else '')) from error
    check_finite(state, f'official checkpoint {src}')
    tag = Tag.of_layout('meta' if meta else 'assemble', layout.tag(), extra=dict(source=str(src)))
    return dict(meta=tag.meta(), state_dict=state)


def convert_official_file(src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> Path:
    """Convert ``src`` and write ``dst`` atomically; nothing is written if anything is wrong.

    A ``dst`` that is a folder or the input itself (also through a link) is refused before ``src`` is read.
    """
    check_output(dst, [src], replace=False)
    return save_atomic(convert_official(src, **kwargs), dst)
