"""Plots of incubation runs: accuracy against training cost, every phase placed on the cost axis."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import write_atomic
from .engine.runner.records import load_records
from .phases import Phase

METRIC = 'accuracy/top1'


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
    curves: dict[str, list[tuple[float, float]]] = {}
    spent = 0.0
    for record in load_records(work_dir):
        phase = Phase(record['phase'], record['module'])
        incubation = phase.spec.method == 'incubation'
        offset = spent if incubation else 0.0  # each record holds its own phase's cost
        curves[phase.label] = [(entry['cost'] + offset, entry['metrics'][METRIC])
                               for entry in record['history'] if METRIC in entry['metrics']]
        if incubation:
            spent += record['cost']
    return curves


def plot_accuracy_vs_cost(work_dir: str | Path, out_file: str | Path) -> Path:
    """Draw validation top-1 against cumulative training cost (block-images) to a PNG (written atomically)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = accuracy_curves(work_dir)
    if not curves:
        raise FileNotFoundError(f'no phase_record.json under {work_dir}')
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, points in curves.items():
        if not points:
            continue
        costs, accuracies = zip(*points)
        style = dict(color='tab:orange', linewidth=2) if name == 'end-to-end' else {}
        ax.plot([c / 1e6 for c in costs], accuracies, marker='o', markersize=3, label=name, **style)
    ax.set_xlabel('training cost (million block-images; incubation phases laid end to end)')
    ax.set_ylabel('validation top-1 (%)')
    ax.set_title(Path(work_dir).name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
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
