"""Plots of incubation runs: accuracy against training cost, incubation next to end-to-end."""
from __future__ import annotations

from pathlib import Path

from .engine.runner.incubation_runner import load_records

METRIC = 'accuracy/top1'


def accuracy_curves(work_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """``{'incubation': [(cost, top-1), ...], 'e2e': [...]}`` from a pipeline's phase records.

    The incubation curve is the fine-tune phase, shifted by the cost of meta pretraining and all
    module incubations: that is what a user pays before the assembled model exists.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for record in load_records(work_dir):
        name = {'finetune': 'incubation', 'e2e': 'e2e'}.get(record['phase'])
        if name:
            curves[name] = [(entry['cost'], entry['metrics'][METRIC]) for entry in record['history']
                            if METRIC in entry['metrics']]
    return curves


def plot_accuracy_vs_cost(work_dir: str | Path, out_file: str | Path) -> Path:
    """Draw validation top-1 against cumulative training cost (block-images) to a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = accuracy_curves(work_dir)
    if not curves:
        raise FileNotFoundError(f'no finetune or e2e phase_record.json under {work_dir}')
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    labels = {'incubation': 'Deep Incubation (fine-tune, after meta + modules)', 'e2e': 'end-to-end'}
    for name, points in curves.items():
        costs, accuracies = zip(*points)
        ax.plot([c / 1e6 for c in costs], accuracies, marker='o', label=labels[name])
    ax.set_xlabel('training cost (million block-images)')
    ax.set_ylabel('validation top-1 (%)')
    ax.set_title(Path(work_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_file = Path(out_file)
    fig.savefig(out_file)
    plt.close(fig)
    return out_file
