"""Module layouts: which blocks and parameters belong to which module, and re-keying between layouts.

Deep Incubation splits a block-sequential backbone into K modules. A layout is only the list of
module depths: the full model is ``(3, 3, 3, 3)``, its meta model ``(1, 1, 1, 1)`` and the hybrid
that incubates module 1 ``(1, 3, 1, 1)``. Initialising a hybrid from the meta model, exporting a
trained module and assembling the full model are all the same operation: copying the parameters of
some modules from one layout's key space to another's (:func:`convert_state_dict`).

This module is pure: it knows state-dict keys and tensors, nothing of MMEngine.
"""
from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

STEM = 'stem'
TAIL = 'tail'


@dataclass(frozen=True)
class BlockNaming:
    """Where a backbone keeps its blocks in a state dict, and what sits before and after them.

    ``block_prefix`` followed by the global block index and a dot names a block parameter. Keys
    starting with a ``stem_prefixes`` entry belong to the first module (patch embedding, class
    token, position embedding), keys starting with a ``tail_prefixes`` entry to the last (final
    norm, neck, head). Any other key is an error, so no parameter is ever silently misassigned.
    ``residual_outputs`` are the block-relative key prefixes of the last layer of each residual
    branch: zeroing them turns a pre-norm block into the identity.
    """

    block_prefix: str
    stem_prefixes: tuple[str, ...]
    tail_prefixes: tuple[str, ...]
    residual_outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        pattern = re.compile(re.escape(self.block_prefix) + r'(\d+)\.(.+)$')
        object.__setattr__(self, '_pattern', pattern)

    def split(self, key: str) -> tuple[int, str] | None:
        """Return ``(global block index, rest of the key)`` for a block key, else None."""
        match = self._pattern.match(key)
        return (int(match.group(1)), match.group(2)) if match else None

    def join(self, block: int, rest: str) -> str:
        return f'{self.block_prefix}{block}.{rest}'

    def part_of(self, key: str) -> str | int:
        """``STEM``, ``TAIL`` or the global block index a key belongs to."""
        block = self.split(key)
        if block is not None:
            return block[0]
        if key.startswith(self.stem_prefixes):
            return STEM
        if key.startswith(self.tail_prefixes):
            return TAIL
        raise KeyError(
            f'state-dict key {key!r} is neither a block ({self.block_prefix}N.*), nor a stem '
            f'parameter {self.stem_prefixes}, nor a tail parameter {self.tail_prefixes}')


#: mmpretrain ``ImageClassifier`` with a ``VisionTransformer`` (or DeiT) backbone.
VIT_NAMING = BlockNaming(
    block_prefix='backbone.layers.',
    stem_prefixes=('backbone.patch_embed.', 'backbone.cls_token', 'backbone.dist_token',
                   'backbone.pos_embed', 'backbone.pre_norm.'),
    tail_prefixes=('backbone.ln1.', 'backbone.ln2.', 'neck.', 'head.'),
    # mmpretrain's TransformerEncoderLayer: x + attn.proj(...), then x + ffn.layers[1](...).
    residual_outputs=('attn.proj.', 'ffn.layers.1.'),
)


class LayoutError(ValueError):
    """A layout, module index or state dict does not fit what was asked of it."""


@dataclass(frozen=True)
class ModuleLayout:
    """Depths of K consecutive modules of a block-sequential backbone."""

    depths: tuple[int, ...]
    naming: BlockNaming = VIT_NAMING

    def __post_init__(self) -> None:
        depths = tuple(self.depths)
        if not depths or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in depths):
            raise LayoutError(f'module depths must be a non-empty list of positive ints, got {self.depths}')
        object.__setattr__(self, 'depths', tuple(int(d) for d in depths))

    @classmethod
    def uniform(cls, total_depth: int, num_modules: int, naming: BlockNaming = VIT_NAMING) -> ModuleLayout:
        """Split ``total_depth`` blocks into ``num_modules`` equal modules."""
        if num_modules < 1 or total_depth % num_modules:
            raise LayoutError(f'a depth of {total_depth} blocks cannot be split into {num_modules} '
                              'equal modules; give the module depths explicitly')
        return cls((total_depth // num_modules, ) * num_modules, naming)

    @property
    def num_modules(self) -> int:
        return len(self.depths)

    @property
    def total_depth(self) -> int:
        return sum(self.depths)

    def meta(self) -> ModuleLayout:
        """The meta model: one block per module."""
        return ModuleLayout((1, ) * self.num_modules, self.naming)

    def hybrid(self, target: int) -> ModuleLayout:
        """The meta model whose ``target``-th block is the real module ``target``."""
        self._check_module(target)
        depths = [1] * self.num_modules
        depths[target] = self.depths[target]
        return ModuleLayout(tuple(depths), self.naming)

    def first_block(self, module: int) -> int:
        self._check_module(module)
        return sum(self.depths[:module])

    def blocks_of(self, module: int) -> range:
        start = self.first_block(module)
        return range(start, start + self.depths[module])

    def locate(self, block: int) -> tuple[int, int]:
        """``(module, index inside the module)`` of a global block index."""
        if not 0 <= block < self.total_depth:
            raise LayoutError(f'block {block} is out of range for layout {self.depths} '
                              f'({self.total_depth} blocks)')
        for module, depth in enumerate(self.depths):
            if block < depth:
                return module, block
            block -= depth
        raise AssertionError('unreachable')

    def module_of(self, key: str) -> int:
        """The module owning a state-dict key."""
        part = self.naming.part_of(key)
        if part == STEM:
            return 0
        if part == TAIL:
            return self.num_modules - 1
        return self.locate(part)[0]

    def _check_module(self, module: int) -> None:
        if not 0 <= module < self.num_modules:
            raise LayoutError(f'module index {module} is out of range for {self.num_modules} modules '
                              f'(layout {self.depths})')


def convert_state_dict(state_dict: Mapping[str, object],
                       src: ModuleLayout,
                       dst: ModuleLayout,
                       modules: Iterable[int] | None = None) -> dict[str, object]:
    """Copy the parameters of ``modules`` from ``src``'s key space into ``dst``'s.

    Block ``i`` of module ``m`` keeps its place inside the module and moves to the global index
    that module ``m``'s ``i``-th block has in ``dst``; stem and tail keys keep their names. Keys of
    other modules are left out. Each copied module must have the same depth in both layouts.
    """
    if src.num_modules != dst.num_modules:
        raise LayoutError(f'cannot map {src.num_modules} modules (layout {src.depths}) onto '
                          f'{dst.num_modules} modules (layout {dst.depths})')
    wanted = sorted(set(range(src.num_modules) if modules is None else modules))
    for module in wanted:
        src._check_module(module)
        if src.depths[module] != dst.depths[module]:
            raise LayoutError(f'module {module} has {src.depths[module]} blocks in layout {src.depths} '
                              f'but {dst.depths[module]} in layout {dst.depths}')
    converted = {}
    for key, value in state_dict.items():
        if src.module_of(key) not in wanted:
            continue
        block = src.naming.split(key)
        if block is not None:
            module, local = src.locate(block[0])
            key = dst.naming.join(dst.first_block(module) + local, block[1])
        converted[key] = value
    return converted


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
