"""Print a pipeline's per-phase table, compare incubation with E2E, and plot accuracy vs cost.

    python tools/analysis_tools/summarize_incubation.py work_dirs/incubate_demo_fashion_mnist
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mmincubation.engine.runner.incubation_runner import format_summary, method_results
from mmincubation.visualization import plot_accuracy_vs_cost


def compare(work_dir: Path) -> list[str]:
    """One line per method: final test top-1, total training cost and wall time."""
    names = {'incubation': 'Deep Incubation', 'e2e': 'end-to-end'}
    lines = []
    for method, result in method_results(work_dir).items():
        top1 = result['top1']
        lines.append(f'{names[method]:<16} test top-1 {top1 if top1 is None else round(top1, 2)}  '
                     f'cost {result["cost"] / 1e6:.1f} M block-images  wall {result["wall_seconds"]:.0f} s')
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', type=Path, help='the pipeline work dir (tools/train.py --work-dir)')
    parser.add_argument('--out', type=Path, help='PNG path (default: <work_dir>/accuracy_vs_cost.png)')
    args = parser.parse_args(argv)
    for line in format_summary(args.work_dir) + [''] + compare(args.work_dir):
        print(line)
    print(f'plot: {plot_accuracy_vs_cost(args.work_dir, args.out or args.work_dir / "accuracy_vs_cost.png")}')


if __name__ == '__main__':
    main()
