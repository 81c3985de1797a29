"""The checkpoint tag: what an mmincubation file holds and what it was made for, built and checked here only.

Every product and intermediate checkpoint the pipeline writes carries ``meta.mmincubation``, the
:class:`Tag` as a plain dict (``torch.load(weights_only=True)`` reads it)::

    phase        the phase that wrote it (a row of :data:`~mmincubation.phases.PHASE_TABLE`)
    layout       the full model's module depths, e.g. [3, 3, 3, 3]
    backbone     the backbone spec's kind ('vit', 'swin', ...: mmincubation/backbones)
    stages       the full model's stage depths
    holds        'meta', 'module', 'hybrid' or 'full'
    module       the module index of a module or hybrid
    recipe       the phase's recipe (its derived config less paths and logging, JSON) and its sha256,
    fingerprint  so that a product of another recipe is told apart, with the first difference named
    inputs       {input file name: sha256} of the files the phase was made from (meta.pth, module_k.pth, ...)
    weights      'raw', or 'ema' when an EMA hook's averaged weights were exported (the ones evaluated)

plus what a writer adds of its own (``sources`` of an assembly, ``pretrained`` of a made meta model,
``source`` of a converted official checkpoint). Files tagged before a field existed read with its
default: ``holds`` from the phase table, no recipe, no inputs, raw weights.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .phases import PHASE_TABLE

#: Key under ``checkpoint['meta']`` where mmincubation keeps the tag.
META_KEY = 'mmincubation'
_FIELDS = ('phase', 'layout', 'backbone', 'stages', 'holds', 'module', 'recipe', 'fingerprint', 'inputs', 'weights')


@dataclass(frozen=True)
class Tag:
    """What a checkpoint holds and what it was made for (see the module docs for the fields)."""

    phase: str
    layout: tuple[int, ...] = ()
    backbone: str = 'vit'
    stages: tuple[int, ...] = ()
    holds: str = ''
    module: int | None = None
    recipe: str | None = None
    fingerprint: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    weights: str = 'raw'
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'layout', tuple(int(d) for d in self.layout))
        object.__setattr__(self, 'stages', tuple(int(d) for d in self.stages) or (sum(self.layout), ))
        if not self.holds:
            spec = PHASE_TABLE.get(self.phase)
            object.__setattr__(self, 'holds', spec.holds if spec else 'unknown')

    @classmethod
    def of_layout(cls, phase: str, layout_tag: Mapping, **fields) -> Tag:
        """A tag of ``phase`` for the layout ``ModuleLayout.tag()`` describes; ``fields`` as the attributes."""
        return cls(phase=phase, layout=layout_tag['layout'], backbone=layout_tag['backbone'],
                   stages=layout_tag['stages'], **fields)

    @classmethod
    def from_dict(cls, record: Mapping) -> Tag:
        """The tag a checkpoint's ``meta.mmincubation`` holds (any age).

        Raises:
            KeyError, TypeError, ValueError: a record without phase, or with fields of the wrong type (a record
                without layout reads with none: only a whole network's keys and shapes can tell then).
        """
        if 'phase' not in record:
            raise KeyError('no phase')
        known = {key: record[key] for key in _FIELDS if key in record and record[key] is not None}
        known.setdefault('backbone', 'vit')
        return cls(**known, extra={key: value for key, value in record.items() if key not in _FIELDS})

    @classmethod
    def of_checkpoint(cls, checkpoint: Mapping) -> Tag | None:
        """The tag of a loaded checkpoint (``{'meta': ..., 'state_dict': ...}``), None if it has none."""
        record = (checkpoint.get('meta') or {}).get(META_KEY)
        return cls.from_dict(record) if isinstance(record, Mapping) else None

    def to_dict(self) -> dict:
        """The plain dict written to ``meta.mmincubation`` (fields that are unset are left out)."""
        record = dict(phase=self.phase, layout=list(self.layout), backbone=self.backbone, stages=list(self.stages),
                      holds=self.holds)
        optional = dict(module=self.module, recipe=self.recipe, fingerprint=self.fingerprint,
                        inputs=dict(self.inputs) or None, weights=None if self.weights == 'raw' else self.weights)
        record.update({key: value for key, value in optional.items() if value is not None})
        record.update(self.extra)
        return record

    def meta(self, **more) -> dict:
        """``checkpoint['meta']`` holding this tag (and ``more``, e.g. ``dataset_meta``)."""
        return {META_KEY: self.to_dict(), **more}

    def with_(self, **fields) -> Tag:
        return replace(self, **fields)

    def layout_text(self) -> str:
        stages = f' in stages {self.stages}' if len(self.stages) > 1 else ''
        return f'{self.backbone} layout {self.layout}{stages}'

    def misfit(self, expected: Tag) -> str | None:
        """The first way this tag differs from ``expected`` (the tag the current config would write), or None.

        Compared in this order: phase, contents, backbone and layout, module, recipe (naming the first
        setting that differs, e.g. ``optim_wrapper.optimizer.lr 0.001 vs 0.0005``), input files, weights.
        A tag without a recipe (written before recipes were recorded) differs from one with.
        """
        if self.phase != expected.phase or self.holds != expected.holds:
            return (f'it holds {self.holds} weights of the {self.phase} phase, expected {expected.holds} '
                    f'of {expected.phase}')
        if (self.backbone, self.layout, self.stages) != (expected.backbone, expected.layout, expected.stages):
            return f'{self.layout_text()} vs {expected.layout_text()}'
        if self.module != expected.module:
            return f'module {self.module} vs {expected.module}'
        if expected.fingerprint and self.fingerprint != expected.fingerprint:
            if not self.recipe:
                return 'it records no recipe (written by an earlier mmincubation)'
            return recipe_difference(json.loads(self.recipe), json.loads(expected.recipe or '{}'))
        for name, digest in expected.inputs.items():
            if self.inputs.get(name) != digest:
                return (f'it was made from another {name} than the one now on disk' if name in self.inputs else
                        f'it records no input {name}')
        if self.weights != expected.weights:
            return f'{self.weights} weights vs {expected.weights}'
        return None


def recipe_difference(found: object, wanted: object, path: str = '') -> str | None:
    """The first setting in which two canonical recipes (JSON-like values) differ, e.g.
    ``'optim_wrapper.optimizer.lr 0.001 vs 0.0005'`` (``found`` first), or None when they are equal."""
    if isinstance(found, dict) and isinstance(wanted, dict):
        for key in sorted(set(found) | set(wanted)):
            where = f'{path}.{key}' if path else str(key)
            if key not in found or key not in wanted:
                return f'{where} {repr(found[key]) if key in found else "unset"} vs ' \
                       f'{repr(wanted[key]) if key in wanted else "unset"}'
            difference = recipe_difference(found[key], wanted[key], where)
            if difference:
                return difference
        return None
    if isinstance(found, list) and isinstance(wanted, list) and len(found) == len(wanted):
        for index, (a, b) in enumerate(zip(found, wanted)):
            difference = recipe_difference(a, b, f'{path}[{index}]')
            if difference:
                return difference
        return None
    return None if found == wanted else f'{path} {found!r} vs {wanted!r}'
