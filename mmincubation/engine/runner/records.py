"""The phase record (:class:`PhaseRecord`, one type, written and read here) and what is read from a work dir's
records: per-phase table, per-method totals.

Each ``phase_record.json`` (written by :class:`~mmincubation.engine.hooks.PhaseRecordHook`, or for a meta model
made of a pretrained network by the runner) holds its own phase's cost; a method's cost is the sum over the
phases it paid for.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...checkpoint import write_atomic
from ...phases import METHODS, PHASE_TABLE, Phase

#: A record written before records named their module (``'incubate_module_2'``) and held the cost of
#: the phases before them (``cost_offset``); read so that earlier benchmark results stay comparable.
_LEGACY_INCUBATE = re.compile(r'incubate_module_(\d+)$')


def _normalised(record: dict) -> dict:
    """``record`` with ``phase``/``module`` split and its own cost only (see ``_LEGACY_INCUBATE``)."""
    legacy = _LEGACY_INCUBATE.match(record['phase'])
    if legacy:
        record.update(phase='incubate', module=int(legacy.group(1)))
    offset = record.pop('cost_offset', 0.0)
    if offset:
        record['cost'] -= offset
        for entry in record['history']:
            entry['cost'] -= offset
    record.setdefault('module', None)
    return record


RECORD_FILE = 'phase_record.json'


@dataclass(frozen=True)
class PhaseRecord:
    """What a phase trained, what it cost and how it scored.

    Attributes:
        phase, module: the phase (a row of :data:`~mmincubation.phases.PHASE_TABLE`) and its module index.
        finished: whether training ended (a record is rewritten after every evaluation).
        num_blocks: blocks of the network it trains; ``cost = images x num_blocks`` (block-images).
        iters, images: iterations run and images seen (all ranks).
        wall_seconds, seconds_per_iter: time spent (resumed runs included), mean iteration time.
        history: ``[{epoch, iter, images, cost, metrics}]``, one entry per validation.
        test_metrics: the final test's metrics, if the phase is tested.
        pretrained: what a meta model made of a pretrained network came from (see ``incubation.meta_from``).
    """

    phase: str
    num_blocks: int = 0
    module: int | None = None
    finished: bool = False
    iters: int = 0
    images: int = 0
    cost: float = 0.0
    wall_seconds: float = 0.0
    seconds_per_iter: float | None = None
    history: list = field(default_factory=list)
    test_metrics: dict = field(default_factory=dict)
    pretrained: dict | None = None

    @classmethod
    def from_dict(cls, record: dict, path: str | Path = 'phase record') -> PhaseRecord:
        """A record as read from JSON, of any age (see ``_LEGACY_INCUBATE``).

        Raises:
            ValueError: naming ``path`` and the missing or unknown fields.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({'phase'} - set(record))
        record = _normalised(dict(record)) if not missing else record
        unknown = sorted(set(record) - names)
        if missing or unknown:
            raise ValueError(f'{path} is not a phase record: missing {missing}, unknown fields {unknown}')
        return cls(**record)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def write_record(phase_work_dir: str | Path, record: PhaseRecord) -> Path:
    """Write a phase's record atomically to ``phase_work_dir/phase_record.json``."""
    text = json.dumps(record.to_dict(), indent=1).encode()
    return write_atomic(Path(phase_work_dir) / RECORD_FILE, lambda f: f.write(text))


def read_record(path: str | Path) -> dict:
    """One phase record as a dict (:meth:`PhaseRecord.to_dict`), with its own phase's cost only (any age)."""
    return PhaseRecord.from_dict(json.loads(Path(path).read_text()), path).to_dict()


def load_records(work_dir: str | Path) -> list[dict]:
    """The record of each phase of the pipeline in ``work_dir``, in pipeline order (modules by index).

    Only a record in its phase's own folder counts: runs set aside by ``--retrain`` (``replaced/``) or
    copied elsewhere under the work dir are not the pipeline's.
    """
    records = []
    for path in Path(work_dir).rglob(RECORD_FILE):
        record = read_record(path)
        if path.parent.resolve() == Phase(record['phase'], record['module']).work_dir(work_dir).resolve():
            records.append(record)
    return sorted(records, key=lambda record: Phase(record['phase'], record['module']).order)


def method_results(work_dir: str | Path) -> dict[str, dict]:
    """Per method (:data:`~mmincubation.phases.METHODS`) of a pipeline work dir: final test top-1, cost, wall time.

    Incubation's ``cost`` sums every phase it paid for (meta, modules, fine-tune); a meta model made of a
    pretrained network (``incubation.meta_from``) adds what that network cost to train, paid before, as
    ``pretraining_cost`` (None if unknown) and in ``total_cost``. A method whose final phase (fine-tune /
    E2E) has no record yet is left out.
    """
    records = load_records(work_dir)
    results = {}
    for name, final_phase in METHODS.items():
        phases = [r for r in records if name in PHASE_TABLE[r['phase']].counted_by]
        final = [r for r in phases if r['phase'] == final_phase]
        if final:
            pretrained = [r['pretrained'] for r in phases if r.get('pretrained')]
            known = all(p.get('cost') is not None for p in pretrained)
            pretraining = sum(p['cost'] for p in pretrained) if known else None
            cost = sum(r['cost'] for r in phases)
            results[name] = dict(top1=(final[0].get('test_metrics') or {}).get('accuracy/top1'), cost=cost,
                                 pretraining_cost=pretraining if pretrained else 0.0,
                                 total_cost=None if pretraining is None else cost + pretraining,
                                 wall_seconds=sum(r['wall_seconds'] for r in phases))
    return results


def format_summary(work_dir: str | Path) -> list[str]:
    """A table of every recorded phase: blocks, iterations, wall time, s/iter, cost, last top-1."""
    lines = [f'{"phase":<18}{"blocks":>7}{"iters":>8}{"wall s":>9}{"s/iter":>9}{"cost (M blk-img)":>17}'
             f'{"val top-1":>11}{"test top-1":>12}']
    for record in load_records(work_dir):
        val = record['history'][-1]['metrics'].get('accuracy/top1') if record['history'] else None
        test = (record.get('test_metrics') or {}).get('accuracy/top1')
        name = str(Phase(record['phase'], record['module']))
        lines.append(f'{name:<18}{record["num_blocks"]:>7}{record["iters"]:>8}'
                     f'{record["wall_seconds"]:>9.1f}{record["seconds_per_iter"] or 0:>9.3f}'
                     f'{record["cost"] / 1e6:>17.2f}{_fmt(val):>11}{_fmt(test):>12}')
    return lines


def _fmt(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}'
