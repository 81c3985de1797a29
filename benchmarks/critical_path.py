"""Critical path of every method of a pipeline work dir on 1, K and 8 machines, from its phase records.

    python benchmarks/critical_path.py work_dirs/incubate_demo_fashion_mnist
    python benchmarks/critical_path.py RUN/grown RUN/stack RUN/grow RUN/e2e  # methods in work dirs of their own

Several work dirs are read as one pipeline (a phase recorded in two of them, such as a shared meta model,
counts once).

Prints the table of :func:`mmincubation.critical_path.critical_path_table` (block-images per machine along the
longest chain of dependent phases, and how many machines synchronise at each step of the widest phase) and
draws it as a bar chart beside the work dir (``critical_path.png``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mmincubation.checkpoint import write_atomic
from mmincubation.critical_path import critical_path, critical_path_table, methods_in
from mmincubation.engine.runner.cli import exit_on_bad_input
from mmincubation.engine.runner.records import load_records
from mmincubation.phases import Phase


def phase_costs(work_dirs: list[Path]) -> dict[Phase, float]:
    """Each phase's cost (block-images) as recorded in the work dirs."""
    costs = {}
    for work_dir in work_dirs:
        records = load_records(work_dir)
        if not records:
            raise SystemExit(f'error: {work_dir} holds no phase_record.json: run the pipeline first')
        costs.update({Phase(r['phase'], r['module']): float(r['cost']) for r in records})
    return costs


def plot(costs: dict[Phase, float], machine_counts: list[int], out: Path) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    methods = methods_in(costs)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        lengths = [critical_path(costs, method, m)['length'] / 1e6 for m in machine_counts]
        ax.bar([i + index * width for i in range(len(machine_counts))], lengths, width=width, label=method)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(machine_counts))], [f'{m} machines' for m in machine_counts])
    ax.set(ylabel='critical path (M block-images per machine)', ylim=(0, None),
           title='longest chain of dependent work, ideal data parallelism within a job')
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(out, lambda f: fig.savefig(f, format='png'))
    plt.close(fig)
    return out


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', type=Path, nargs='+', help='a pipeline\'s work dir, or several read as one')
    args = parser.parse_args(argv)
    costs = phase_costs(args.work_dirs)
    num_modules = sum(1 for phase in costs if phase.module is not None) or 1
    machine_counts = sorted({1, num_modules, 8})
    for line in critical_path_table(costs, num_modules, machine_counts):
        print(line)
    print(f'plot: {plot(costs, machine_counts, args.work_dirs[0] / "critical_path.png")}')


if __name__ == '__main__':
    main()
