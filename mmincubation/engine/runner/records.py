"""Reading the phase records of a pipeline work dir: per-phase table, per-method totals.

Each ``phase_record.json`` (written by :class:`~mmincubation.engine.hooks.PhaseRecordHook`) holds
its own phase's cost; a method's cost is the sum over the phases it paid for.
"""
from __future__ import annotations

import json
import re
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


def write_record(phase_work_dir: str | Path, record: dict) -> Path:
    """Write a phase's record (as :class:`~mmincubation.engine.hooks.PhaseRecordHook` builds it) atomically."""
    return write_atomic(Path(phase_work_dir) / RECORD_FILE, lambda f: f.write(json.dumps(record, indent=1).encode()))


def read_record(path: str | Path) -> dict:
    """One phase record, with its own phase's cost only (records of any age)."""
    return _normalised(json.loads(Path(path).read_text()))


def load_records(work_dir: str | Path) -> list[dict]:
    """Every ``phase_record.json`` under ``work_dir``, in pipeline order (modules by index)."""
    records = [read_record(path) for path in Path(work_dir).rglob(RECORD_FILE)]
    return sorted(records, key=lambda record: Phase(record['phase'], record['module']).order)


def method_results(work_dir: str | Path) -> dict[str, dict]:
    """Per method ('incubation', 'e2e') of a pipeline work dir: final test top-1, cost, wall time.

    Incubation's ``cost`` sums every phase it paid for (meta, modules, fine-tune); a meta model made of a
    pretrained network (``incubation.meta_from``) adds what that network cost to train, paid before, as
    ``pretraining_cost`` (None if unknown) and in ``total_cost``. A method whose final phase (fine-tune /
    E2E) has no record yet is left out.
    """
    records = load_records(work_dir)
    results = {}
    for name, final_phase in METHODS.items():
        phases = [r for r in records if PHASE_TABLE[r['phase']].method == name]
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
