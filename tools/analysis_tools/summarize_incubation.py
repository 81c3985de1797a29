"""Print a pipeline's per-phase table, compare incubation with E2E, and plot accuracy vs cost.

    python tools/analysis_tools/summarize_incubation.py work_dirs/incubate_demo_fashion_mnist

Reads every ``phase_record.json`` under the work dir; a work dir without any, or a record that is not
one (truncated, another JSON), is refused with its path before anything is written. The plot is written
atomically; --out must name an image file (.png, .pdf, .svg, ...), not a folder or a phase record.
"""
from __future__ import annotations

import argparse
import json
from numbers import Number
from pathlib import Path

from mmincubation.checkpoint import check_output
from mmincubation.engine.runner.cli import exit_on_bad_input
from mmincubation.engine.runner.records import format_summary, method_results
from mmincubation.phases import METHOD_TITLES
from mmincubation.visualization import plot_accuracy_vs_cost, plot_formats

#: What this summary reads of a phase record (written by mmincubation's PhaseRecordHook).
NUMBERS = ('num_blocks', 'iters', 'wall_seconds', 'cost')


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return f'holds a JSON {type(record).__name__}, not an object'
    missing = [key for key in ('phase', 'history', *NUMBERS) if key not in record]
    if missing:
        return f'lacks {missing}'
    wrong = [key for key in NUMBERS if not isinstance(record[key], Number)]
    if not isinstance(record['phase'], str):
        wrong.insert(0, 'phase')
    if not isinstance(record['history'], list) or not all(
            isinstance(entry, dict) and isinstance(entry.get('cost'), Number) and isinstance(entry.get('metrics'), dict)
            for entry in record['history']):
        wrong.append('history')
    return f'has values of the wrong type for {wrong}' if wrong else None


def check_records(work_dir: Path) -> list[Path]:
    """The phase records under ``work_dir``, each checked to be one; SystemExit naming the first that is not."""
    if not work_dir.is_dir():
        raise SystemExit(f'error: work dir {work_dir} ' + ('is a file, expected a pipeline work dir (a folder)'
                                                            if work_dir.exists() else 'does not exist'))
    paths = sorted(work_dir.rglob('phase_record.json'))
    if not paths:
        raise SystemExit(f'error: no phase_record.json under {work_dir}: not a pipeline work dir, or no phase '
                         'has recorded anything yet (tools/train.py --work-dir)')
    for path in paths:
        try:
            problem = _record_problem(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            problem = f'is not readable JSON ({type(error).__name__}: {error})'
        if problem:
            raise SystemExit(f'error: phase record {path} {problem}; expected the phase_record.json that '
                             'tools/train.py writes')
    return paths


def check_plot_path(out: Path, inputs: list[Path]) -> None:
    """Refuse a plot path that is a folder, a phase record, or not an image file name."""
    check_output(out, inputs, what='plot', example='accuracy_vs_cost.png')
    formats = plot_formats()
    suffix = out.suffix.lower().lstrip('.')
    if suffix not in formats:
        found = f'.{suffix}' if suffix else 'no file name suffix'
        raise SystemExit(f'error: plot {out} has {found}; expected an image file name ending in .png '
                         f'(or .{", .".join(sorted(f for f in formats if f != "png"))})')


def compare(work_dir: Path) -> list[str]:
    """One line per method: final test top-1, total training cost and wall time."""
    lines = []
    for method, result in method_results(work_dir).items():
        top1 = result['top1']
        pretraining = result['pretraining_cost']
        paid_before = '' if pretraining == 0 else (
            '  + pretraining unknown (pass incubation.meta_from.cost)' if pretraining is None else
            f'  + pretraining {pretraining / 1e6:.1f} = total {result["total_cost"] / 1e6:.1f} M block-images')
        lines.append(f'{METHOD_TITLES[method]:<16} test top-1 {top1 if top1 is None else round(top1, 2)}  cost '
                     f'{result["cost"] / 1e6:.1f} M block-images{paid_before}  wall {result["wall_seconds"]:.0f} s')
    return lines


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', type=Path, help='the pipeline work dir (tools/train.py --work-dir)')
    parser.add_argument('--out', type=Path, help='PNG path (default: <work_dir>/accuracy_vs_cost.png)')
    args = parser.parse_args(argv)
    records = check_records(args.work_dir)
    out = args.out or args.work_dir / 'accuracy_vs_cost.png'
    check_plot_path(out, records)
    for line in format_summary(args.work_dir) + [''] + compare(args.work_dir):
        print(line)
    print(f'plot: {plot_accuracy_vs_cost(args.work_dir, out)}')


if __name__ == '__main__':
    main()
