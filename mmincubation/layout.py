"""Module layouts: which blocks and parameters belong to which module, and re-keying between layouts.

Deep Incubation splits a block-sequential backbone into K modules, each a contiguous run of blocks
in global order (Sec. 3.1). A layout is the list of module depths plus, for backbones built in
stages (Swin), the blocks of each stage: the full ViT-B is modules ``(3, 3, 3, 3)`` in one stage
of 12, its meta model ``(1, 1, 1, 1)`` and the hybrid that incubates module 1 ``(1, 3, 1, 1)``.
A module may cross a stage boundary: the full model's blocks of module ``m`` in stage ``s`` form a
*segment*; the meta model reduces every segment to one block and so keeps the stage structure
(Swin-B, stages ``(2, 2, 18, 2)``, four modules of 6 blocks: meta stages ``(1, 1, 4, 1)``), the
hybrid for module ``k`` reduces every segment but ``k``'s. A layer after a stage (Swin's patch
merging) belongs to the module holding the last block of its stage, a layer before a stage (ConvNeXt's
downsampling) to the module holding its first block.

Initialising a hybrid from the meta model, exporting a trained module and assembling the full
model are all the same operation: copying the parameters of some modules from one layout's key
space to another's (:func:`convert_state_dict`); growing a module from the meta model is its
variant for one module of different depths (:func:`grown_module`).

This module is pure: it knows state-dict keys and tensors, nothing of MMEngine or of configs
(each backbone's spec in :mod:`mmincubation.backbones` holds its :class:`BlockNaming`).
"""
from __future__ import annotations

import itertools
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

STEM = 'stem'
TAIL = 'tail'


class BlockKey(NamedTuple):
    """A block parameter's key, split: ``stage``, ``index`` of the block inside the stage, the ``rest``."""

    stage: int
    index: int
    rest: str


def _key_pattern(key_format: str) -> re.Pattern:
    """A regex for ``key_format`` (``{stage}`` / ``{block}`` placeholders) followed by the rest of a key."""
    pattern = re.escape(key_format).replace(r'\{stage\}', r'(?P<stage>\d+)').replace(r'\{block\}', r'(?P<block>\d+)')
    return re.compile(pattern + r'(?P<rest>.+)$')


@dataclass(frozen=True)
class BlockNaming:
    """Where a backbone keeps its blocks in a state dict, and what sits before, between and after them.

    ``block_key`` formats a block's key prefix from its ``{stage}`` (optional: one-stage backbones
    have none) and its ``{block}`` index inside the stage. ``between_key`` (optional) formats the
    prefix of a layer after stage ``{stage}`` (Swin's patch merging): it belongs with that stage's last
    block. ``before_key`` (optional) formats the prefix of a layer before stage ``{stage}`` (ConvNeXt's
    downsampling, its stem before stage 0): it belongs with that stage's first block.
    Keys starting with a ``stem_prefixes`` entry belong to the first module (patch embedding, class
    token, position embedding), keys starting with a ``tail_prefixes`` entry to the last (final
    norm, neck, head). Any other key is an error, so no parameter is ever silently misassigned.
    ``residual_outputs`` name the last layer of each residual branch, one entry per branch: a
    block-relative key prefix, or a tuple of alternatives when the branch may end in one of several
    layers (a ViT's FFN ends in ``ffn.layers.1`` or, SwiGLU, ``ffn.w3``). Zeroing them turns a pre-norm
    block into the identity.
    """

    name: str
    block_key: str
    stem_prefixes: tuple[str, ...]
    tail_prefixes: tuple[str, ...]
    between_key: str | None = None
    residual_outputs: tuple[str | tuple[str, ...], ...] = ()
    before_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, '_block', _key_pattern(self.block_key))
        object.__setattr__(self, '_between', _key_pattern(self.between_key) if self.between_key else None)
        object.__setattr__(self, '_before', _key_pattern(self.before_key) if self.before_key else None)

    def split(self, key: str) -> BlockKey | None:
        """``(stage, index inside the stage, rest of the key)`` for a block key, else None."""
        match = self._block.match(key)
        if match is None:
            return None
        return BlockKey(int(match.groupdict().get('stage') or 0), int(match.group('block')), match.group('rest'))

    def join(self, stage: int, index: int, rest: str) -> str:
        return self.block_key.format(stage=stage, block=index) + rest

    def between_stage(self, key: str) -> int | None:
        """The stage a between-stage layer's key follows, else None."""
        match = self._between.match(key) if self._between else None
        return int(match.group('stage')) if match else None

    def before_stage(self, key: str) -> int | None:
        """The stage a before-stage layer's key precedes, else None."""
        match = self._before.match(key) if self._before else None
        return int(match.group('stage')) if match else None

    def outer_part(self, key: str) -> str:
        """``STEM`` or ``TAIL`` for a key that is neither a block nor between stages."""
        if key.startswith(self.stem_prefixes):
            return STEM
        if key.startswith(self.tail_prefixes):
            return TAIL
        between = f', nor between stages ({self.between_key}*)' if self.between_key else ''
        between += f', nor before a stage ({self.before_key}*)' if self.before_key else ''
        raise KeyError(
            f'state-dict key {key!r} is neither a block ({self.block_key}*){between}, nor a stem '
            f'parameter {self.stem_prefixes}, nor a tail parameter {self.tail_prefixes}')


class LayoutError(ValueError):
    """A layout, module index or state dict does not fit what was asked of it."""


def _positive_ints(values: Iterable, what: str) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in values):
        raise LayoutError(f'{what} must be a non-empty list of positive ints, got {list(values)}')
    return tuple(int(v) for v in values)


def _part_and_index(block: int, depths: tuple[int, ...]) -> tuple[int, int]:
    """``(part, index inside the part)`` of block ``block`` of consecutive parts of ``depths`` blocks (in range)."""
    for part, end in enumerate(itertools.accumulate(depths)):
        if block < end:
            return part, block - (end - depths[part])
    raise AssertionError('unreachable: the caller checks the range')


@dataclass(frozen=True)
class ModuleLayout:
    """Depths of K consecutive modules of a block-sequential backbone, and of its stages.

    ``stage_depths`` (the blocks of each stage, in order) default to one stage holding every block.
    Global block indices run over the stages in order; each module owns a contiguous range of them.
    """

    depths: tuple[int, ...]
    naming: BlockNaming
    stage_depths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, 'depths', _positive_ints(self.depths, 'module depths'))
        stages = _positive_ints(self.stage_depths or (sum(self.depths), ), 'stage depths')
        if sum(stages) != sum(self.depths):
            raise LayoutError(f'module depths {list(self.depths)} add up to {sum(self.depths)} blocks but the '
                              f'stage depths {list(stages)} to {sum(stages)}')
        object.__setattr__(self, 'stage_depths', stages)

    @classmethod
    def uniform(cls, total_depth: int, num_modules: int, naming: BlockNaming,
                stage_depths: tuple[int, ...] = ()) -> ModuleLayout:
        """Split ``total_depth`` blocks into ``num_modules`` equal modules."""
        if num_modules < 1 or total_depth % num_modules:
            raise LayoutError(f'a depth of {total_depth} blocks cannot be split into {num_modules} '
                              'equal modules; give the module depths explicitly')
        return cls((total_depth // num_modules, ) * num_modules, naming, stage_depths)

    @property
    def num_modules(self) -> int:
        return len(self.depths)

    @property
    def total_depth(self) -> int:
        return sum(self.depths)

    def segments(self) -> tuple[tuple[int, ...], ...]:
        """Blocks of each module in each stage: ``segments()[m][s]``."""
        counts = [[0] * len(self.stage_depths) for _ in self.depths]
        for block in range(self.total_depth):
            counts[self.locate(block)[0]][self.stage_of(block)[0]] += 1
        return tuple(map(tuple, counts))

    def _reduced(self, keep: int | None) -> ModuleLayout:
        """Every module's segments reduced to one block, except module ``keep``'s."""
        rows = [row if module == keep else tuple(min(n, 1) for n in row) for module, row in enumerate(self.segments())]
        return ModuleLayout(tuple(sum(row) for row in rows), self.naming, tuple(map(sum, zip(*rows))))

    def meta(self) -> ModuleLayout:
        """The meta model: one block per segment (one per module in a one-stage backbone)."""
        return self._reduced(None)

    def hybrid(self, target: int) -> ModuleLayout:
        """The meta model whose ``target``-th module is the real module ``target``."""
        self._check_module(target)
        return self._reduced(target)

    def block_modules(self) -> list[str]:
        """The sub-module name of every block in global order (``'backbone.stages.1.blocks.0'``): what MMEngine's
        ``activation_checkpointing`` setting and an FSDP wrap policy name."""
        return [self.naming.join(*self.stage_of(block), '').rstrip('.') for block in range(self.total_depth)]

    def first_block(self, module: int) -> int:
        self._check_module(module)
        return sum(self.depths[:module])

    def blocks_of(self, module: int) -> range:
        start = self.first_block(module)
        return range(start, start + self.depths[module])

    def locate(self, block: int) -> tuple[int, int]:
        """``(module, index inside the module)`` of a global block index."""
        self._check_block(block)
        return _part_and_index(block, self.depths)

    def global_block(self, stage: int, index: int) -> int:
        """The global index of block ``index`` of ``stage``."""
        if len(self.stage_depths) == 1 and stage == 0:
            self._check_block(index)
        if not 0 <= stage < len(self.stage_depths):
            raise LayoutError(f'stage {stage} is out of range for stage depths {list(self.stage_depths)}')
        if not 0 <= index < self.stage_depths[stage]:
            raise LayoutError(f'block {index} of stage {stage} is out of range for stage depths '
                              f'{list(self.stage_depths)}')
        return sum(self.stage_depths[:stage]) + index

    def stage_of(self, block: int) -> tuple[int, int]:
        """``(stage, index inside the stage)`` of a global block index."""
        self._check_block(block)
        return _part_and_index(block, self.stage_depths)

    def block_of(self, key: str) -> int | None:
        """The global index of a block key, else None."""
        split = self.naming.split(key)
        return None if split is None else self.global_block(split.stage, split.index)

    def module_of(self, key: str) -> int:
        """The module owning a state-dict key."""
        block = self.block_of(key)
        if block is None:
            after, before = self.naming.between_stage(key), self.naming.before_stage(key)
            if after is not None:
                block = self.global_block(after, 0) + self.stage_depths[after] - 1  # the stage's last block
            elif before is not None:
                block = self.global_block(before, 0)  # the stage's first block
            else:
                return 0 if self.naming.outer_part(key) == STEM else self.num_modules - 1
        return self.locate(block)[0]

    def origins(self, full: ModuleLayout) -> tuple[int, ...]:
        """For each block of this layout (a meta model or hybrid of ``full``), the full model's block it
        stands for: itself in an unreduced segment, the segment's first block in a reduced one."""
        if self.naming != full.naming or len(self.stage_depths) != len(full.stage_depths) or \
                self.num_modules != full.num_modules:
            raise LayoutError(f'layout {self.depths} (stages {self.stage_depths}) is not derived from '
                              f'{full.depths} (stages {full.stage_depths})')
        origins, full_segments = [], full.segments()
        starts = list(itertools.accumulate((0, ) + full.stage_depths))
        full_offsets = [list(itertools.accumulate((0, ) + column)) for column in zip(*full_segments)]
        for stage, column in enumerate(zip(*self.segments())):
            for module, count in enumerate(column):
                full_count = full_segments[module][stage]
                if count not in (full_count, min(full_count, 1)):
                    raise LayoutError(f'module {module} has {count} blocks in stage {stage} of layout {self.depths}, '
                                      f'{full_count} in the full layout {full.depths}')
                first = starts[stage] + full_offsets[stage][module]
                origins += [first + i for i in range(count)]
        return tuple(origins)

    def tag(self) -> dict:
        """What a checkpoint records of its layout (see :func:`layout_from_tag`)."""
        return dict(layout=list(self.depths), backbone=self.naming.name, stages=list(self.stage_depths))

    def _check_block(self, block: int) -> None:
        if not 0 <= block < self.total_depth:
            raise LayoutError(f'block {block} is out of range for layout {self.depths} '
                              f'({self.total_depth} blocks)')

    def _check_module(self, module: int) -> None:
        if not 0 <= module < self.num_modules:
            raise LayoutError(f'module index {module} is out of range for {self.num_modules} modules '
                              f'(layout {self.depths})')


def layout_from_tag(record: Mapping) -> ModuleLayout:
    """The layout a checkpoint's mmincubation tag records; tags written before backbones other than
    the ViT existed (no ``backbone`` field) are ViT layouts of one stage.

    Raises:
        LayoutError: the tag names an unknown backbone or depths that are not a layout.
        KeyError / TypeError: the tag has no or a malformed ``layout``.
    """
    from .backbones import spec_named  # the specs are built on this module
    naming = spec_named(record.get('backbone', 'vit')).naming
    return ModuleLayout(tuple(record['layout']), naming, tuple(record.get('stages') or ()))


def _check_compatible(src: ModuleLayout, dst: ModuleLayout) -> None:
    if src.naming != dst.naming:
        raise LayoutError(f'cannot map a {src.naming.name} layout onto a {dst.naming.name} layout')
    if src.num_modules != dst.num_modules or len(src.stage_depths) != len(dst.stage_depths):
        raise LayoutError(f'cannot map {src.num_modules} modules in {len(src.stage_depths)} stages (layout '
                          f'{src.depths}) onto {dst.num_modules} modules in {len(dst.stage_depths)} stages '
                          f'(layout {dst.depths})')


def convert_state_dict(state_dict: Mapping[str, object],
                       src: ModuleLayout,
                       dst: ModuleLayout,
                       modules: Iterable[int] | None = None) -> dict[str, object]:
    """Copy the parameters of ``modules`` from ``src``'s key space into ``dst``'s.

    Block ``i`` of module ``m`` keeps its place inside the module and moves to where module ``m``'s
    ``i``-th block is in ``dst``; stem, tail, between- and before-stage keys keep their names. Keys of other
    modules are left out. Each copied module must have the same blocks per stage in both layouts.
    """
    _check_compatible(src, dst)
    wanted = sorted(set(range(src.num_modules) if modules is None else modules))
    for module in wanted:
        src._check_module(module)
        if src.segments()[module] != dst.segments()[module]:
            raise LayoutError(f'module {module} has {src.depths[module]} blocks{_per_stage(src, module)} in layout '
                              f'{src.depths} but {dst.depths[module]}{_per_stage(dst, module)} in layout {dst.depths}')
    converted = {}
    for key, value in state_dict.items():
        if src.module_of(key) not in wanted:
            continue
        block = src.block_of(key)
        if block is not None:
            module, local = src.locate(block)
            key = dst.naming.join(*dst.stage_of(dst.first_block(module) + local), src.naming.split(key).rest)
        converted[key] = value
    return converted


def _per_stage(layout: ModuleLayout, module: int) -> str:
    return '' if len(layout.stage_depths) == 1 else f' (per stage {list(layout.segments()[module])})'


def grown_module(meta_state: Mapping[str, object], full: ModuleLayout,
                 module: int) -> tuple[dict, list[tuple[str, ...]]]:
    """Module ``module`` grown from the meta model, keyed as in its hybrid (ours, beyond the paper).

    The first block of each of the module's segments is the meta model's block of that segment;
    stem, tail and between-stage layers are the meta model's. Returns those tensors and, for each
    residual branch of the module's other blocks, the key prefixes its last layer may have
    (``naming.residual_outputs``): the caller zeroes the keys under them so that each of those blocks is
    the identity, and must find at least one key per branch.
    """
    meta, hybrid = full.meta(), full.hybrid(module)
    meta_origins, hybrid_origins = meta.origins(full), hybrid.origins(full)
    grown = {}
    for key, value in meta_state.items():
        if meta.module_of(key) != module:
            continue
        block = meta.block_of(key)
        if block is not None:
            hybrid_block = hybrid_origins.index(meta_origins[block])
            key = hybrid.naming.join(*hybrid.stage_of(hybrid_block), meta.naming.split(key).rest)
        grown[key] = value
    identities = [_branch_ends(hybrid, *hybrid.stage_of(block)) for block in hybrid.blocks_of(module)
                  if hybrid_origins[block] not in meta_origins]
    return grown, [ends for block in identities for ends in block]


def _branch_ends(layout: ModuleLayout, stage: int, index: int) -> list[tuple[str, ...]]:
    """For each residual branch of block ``index`` of ``stage``, the key prefixes its last layer may have."""
    branches = [(branch, ) if isinstance(branch, str) else branch for branch in layout.naming.residual_outputs]
    return [tuple(layout.naming.join(stage, index, rest) for rest in branch) for branch in branches]


def grown_model(meta_state: Mapping[str, object], full: ModuleLayout) -> tuple[dict, list[tuple[str, ...]]]:
    """Every module grown from the meta model at once, keyed as in the full model (the ``grow`` peer).

    Module by module as :func:`grown_module` grows it for its hybrid, then moved to its place in the full
    model: the tensors to copy, and the key prefixes of each residual branch's end in the new blocks (to
    zero, at least one key per entry).
    """
    state, identities = {}, []
    meta_origins = full.meta().origins(full)
    for module in range(full.num_modules):
        grown, _ = grown_module(meta_state, full, module)
        state.update(convert_state_dict(grown, full.hybrid(module), full, [module]))
        identities += [ends for block in full.blocks_of(module) if block not in meta_origins
                       for ends in _branch_ends(full, *full.stage_of(block))]
    return state, identities


def stacked_model(meta_state: Mapping[str, object], full: ModuleLayout) -> dict:
    """The meta model's K blocks repeated in order until the full depth, with its stem and tail (the
    ``stack`` peer: G_stack's depthwise stacking, "Stacking Your Transformers", NeurIPS 2024).

    Full block ``j`` is meta block ``j mod K``: ``[b0 .. bK-1, b0 .. bK-1, ...]``.

    Raises:
        LayoutError: a backbone of several stages (a stage would get blocks of another width), or a depth
            that is not a multiple of K.
    """
    meta = full.meta()
    if len(full.stage_depths) > 1:
        raise LayoutError(f'stacking repeats the meta model\'s blocks in one stage; a {full.naming.name} backbone has '
                          f'stages {list(full.stage_depths)}: use the grow method')
    if full.total_depth % meta.total_depth:
        raise LayoutError(f'stacking repeats the {meta.total_depth} meta blocks; {full.total_depth} blocks are not a '
                          'multiple of them')
    state = {}
    for key, value in meta_state.items():
        split = meta.naming.split(key)
        if split is None:
            state[key] = value
            continue
        for repeat in range(full.total_depth // meta.total_depth):
            state[full.naming.join(0, repeat * meta.total_depth + split.index, split.rest)] = value
    return state


def check_state_dict(state_dict: Mapping[str, object], reference: Mapping[str, object], source: str) -> None:
    """Raise a :class:`LayoutError` naming every missing, unexpected or mis-shaped key.

    ``reference`` is the state dict of the model the weights are meant for; ``source`` names where
    ``state_dict`` came from (a file, a phase) so that the message says what to fix.
    """
    missing = sorted(set(reference) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(reference))
    mismatched = [
        f'{key}: {tuple(state_dict[key].shape)} vs expected {tuple(reference[key].shape)}'
        for key in sorted(set(state_dict) & set(reference))
        if hasattr(state_dict[key], 'shape') and tuple(state_dict[key].shape) != tuple(reference[key].shape)
    ]
    problems = []
    for title, items in (('missing keys', missing), ('unexpected keys', unexpected),
                         ('shape mismatches (another width or patch size?)', mismatched)):
        if items:
            shown = ', '.join(items[:8]) + (f', ... ({len(items)} in all)' if len(items) > 8 else '')
            problems.append(f'{title}: {shown}')
    if problems:
        raise LayoutError(f'{source} does not fit the model: ' + '; '.join(problems))
