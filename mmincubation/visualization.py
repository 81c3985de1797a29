"""Plots of incubation runs: accuracy against training cost, every phase placed on the cost axis."""
from __future__ import annotations

import itertools
from pathlib import Path

from .checkpoint import write_atomic
from .engine.runner.records import load_records
from .phases import Phase

METRIC = 'accuracy/top1'


def _laid_end_to_end(work_dir: str | Path):
    """Each record with the cost spent before it on the cost axis (incubation phases end to end, E2E from 0)."""
    spent = 0.0
    for record in load_records(work_dir):
        phase = Phase(record['phase'], record['module'])
        incubation = phase.spec.method == 'incubation'
        yield phase, record, spent if incubation else 0.0  # each record holds its own phase's cost
        if incubation:
            spent += record['cost']


def accuracy_curves(work_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Validation top-1 against cumulative training cost, one curve per phase, from the phase records.

    The incubation phases are laid end to end in pipeline order, as in the paper's efficiency
    figure (Fig. 5): meta pretraining, then each module's incubation (K independent jobs whose costs
    add up, whether they ran in parallel or not), then fine-tuning, so the last fine-tune point sits
    at the whole pipeline's cost. A hybrid's accuracy is that of the meta model with one real module.
    The end-to-end curve starts at zero.

    Returns:
        ``{'meta model': [(cost, top-1), ...], 'module 0': [...], ..., 'fine-tune': [...],
        'end-to-end': [...]}``, costs in block-images, top-1 in percent.
    """
    return {phase.label: [(entry['cost'] + offset, entry['metrics'][METRIC])
                          for entry in record['history'] if METRIC in entry['metrics']]
            for phase, record, offset in _laid_end_to_end(work_dir)}


def test_points(work_dir: str | Path) -> dict[str, tuple[float, float]]:
    """Test top-1 of each tested phase at its cumulative cost: ``{'fine-tune': (cost, top-1), ...}``."""
    return {phase.label: (record['cost'] + offset, record['test_metrics'][METRIC])
            for phase, record, offset in _laid_end_to_end(work_dir)
            if METRIC in (record.get('test_metrics') or {})}


def accuracy_figure(work_dir: str | Path):
    """The accuracy-vs-cost figure: one colour per curve (E2E in black; distinct up to 16 modules), each tested
    phase's test top-1 a star.

    Returns:
        a matplotlib ``Figure`` (close it with ``matplotlib.pyplot.close``).

    Raises:
        FileNotFoundError: ``work_dir`` holds no phase record.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = accuracy_curves(work_dir)
    if not curves:
        raise FileNotFoundError(f'no phase_record.json under {work_dir}')
    # tab20's 18 colours but its greys, dark ones first (black is E2E's); past 16 modules they come round again
    colours = itertools.cycle(plt.cm.tab20(i) for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (14, 15))
    tested = test_points(work_dir)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, points in curves.items():
        colour = 'black' if name == Phase('e2e').label else next(colours)
        if points:
            costs, accuracies = zip(*points)
            ax.plot([c / 1e6 for c in costs], accuracies, marker='o', markersize=3, label=name, color=colour,
                    linewidth=2 if colour == 'black' else 1.5)
        if name in tested:
            cost, top1 = tested[name]
            ax.plot([cost / 1e6], [top1], marker='*', markersize=11, linestyle='none', color=colour,
                    label=f'{name}: test top-1 {top1:.2f}')
    ax.set_xlabel('training cost (million block-images; incubation phases laid end to end)')
    ax.set_ylabel('top-1 (%): validation (lines), test (stars)')
    ax.set_title(Path(work_dir).name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_cost(work_dir: str | Path, out_file: str | Path) -> Path:
    """Draw :func:`accuracy_figure` to ``out_file`` (written atomically, in the format its suffix names)."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(work_dir)
    out_file = Path(out_file)
    try:  # in the format the suffix names (given a file name without one, matplotlib would add .png)
        write_atomic(out_file, lambda f: fig.savefig(f, format=out_file.suffix.lstrip('.').lower() or None))
    finally:
        plt.close(fig)
    return out_file


def plot_formats() -> set[str]:
    """File name suffixes (without the dot) that :func:`plot_accuracy_vs_cost` can write."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure

    return set(Figure().canvas.get_supported_filetypes())
