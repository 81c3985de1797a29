"""Plots of incubation runs: accuracy against training cost, every phase placed on the cost axis."""
from __future__ import annotations

import itertools
from pathlib import Path

from .checkpoint import write_atomic
from .engine.runner.records import load_records
from .phases import Phase

METRIC = 'accuracy/top1'


def _laid_end_to_end(work_dir: str | Path):
    """Each record with the cost its method spent before it on the cost axis: incubation's phases end to end,
    a growth peer after the meta model it shares, E2E from 0."""
    records = [(Phase(record['phase'], record['module']), record) for record in load_records(work_dir)]
    for index, (phase, record) in enumerate(records):  # each record holds its own phase's cost
        yield phase, record, sum(earlier['cost'] for before, earlier in records[:index]
                                 if phase.spec.method in before.spec.counted_by)


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


def _phase_config(work_dir: Path, phase: Phase):
    """The config a phase ran with, as MMEngine dumped it into the phase's folder; None if it did not run."""
    from mmengine.config import Config
    folder = phase.work_dir(work_dir)
    dumped = sorted(folder.glob('*.py')) if phase.spec.work_dir and folder.is_dir() else []
    return Config.fromfile(dumped[0]) if dumped else None


def _length(cfg) -> str:
    train_cfg = cfg.get('train_cfg') or {}
    return f"{train_cfg['max_iters']} it" if 'max_iters' in train_cfg else f"{train_cfg.get('max_epochs', '?')} ep"


def figure_title(work_dir: str | Path) -> str:
    """Model, data and recipe of a pipeline, from the configs its phases dumped (MMEngine's ``dump_config``).

    Returns:
        e.g. ``VisionTransformer (8 blocks, width 64), 4 modules, on FashionMNIST (60000 images)`` and, on a
        second line, ``meta 3 ep, modules 2 ep, fine-tune 3 ep; E2E 8 ep; AdamW lr 0.001, batch 128``; the
        work dir's name when no phase config is found.
    """
    from .backbones import resolve_arch, stage_depths_of

    work_dir = Path(work_dir)
    records = load_records(work_dir)
    ran = {(r['phase'], r['module']): _phase_config(work_dir, Phase(r['phase'], r['module'])) for r in records}
    ran = {key: cfg for key, cfg in ran.items() if cfg is not None}
    full = ran.get(('finetune', None)) or ran.get(('e2e', None))
    if full is None:
        return work_dir.name
    backbone = full.model.backbone
    arch = backbone.get('arch')
    width = resolve_arch(backbone).get('embed_dims')
    shape = arch if isinstance(arch, str) else f'{sum(stage_depths_of(backbone))} blocks, width {width}'
    modules = sum(1 for phase, _ in ran if phase == 'incubate')
    dataset = full.train_dataloader.dataset
    images = dataset.get('indices')
    data = str(dataset.get('type', 'data')).split('.')[-1] + (f' ({images} images)' if isinstance(images, int) else '')
    steps = []
    for name, label in (('meta', 'meta'), ('incubate', 'modules'), ('finetune', 'fine-tune')):
        cfg = next((cfg for (phase, _), cfg in ran.items() if phase == name), None)
        if cfg is not None:
            steps.append(f'{label} {_length(cfg)}')
    recipe = ', '.join(steps) + (f"; E2E {_length(ran[('e2e', None)])}" if ('e2e', None) in ran else '')
    optimizer = full.optim_wrapper.get('optimizer') or {}
    return (f"{str(backbone.type).split('.')[-1]} ({shape}){f', {modules} modules' if modules else ''}, on {data}\n"
            f"{recipe}; {optimizer.get('type', '?')} lr {optimizer.get('lr', '?')}, "
            f"batch {full.train_dataloader.get('batch_size', '?')}")


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
    ax.set_title(figure_title(work_dir), fontsize=9)
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
