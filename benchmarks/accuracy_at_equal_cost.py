"""Accuracy at equal cost: Deep Incubation against end-to-end (E2E) training of the same deep, narrow ViT.

Every run is the ordinary pipeline command, ``tools/train.py CONFIG --phase all`` (meta -> K modules ->
assemble -> fine-tune, and the E2E twin), in its own work dir; E2E gets the cost of the whole incubation
pipeline, meta pretraining included, rounded up to whole epochs. Cost is counted in block-images (blocks of
the trained network x training images, summed over all phases), read back from the phase records.

Experiments (all on Fashion-MNIST; top-1 on the full 10k test set):
  equal-cost  every seed x training-set fraction (data efficiency), both methods at budget 1
  dmt         every seed, decentralized modular training (module k sees only the k-th quarter of the
              data, class-balanced) at the full set; its meta model is the seed's equal-cost one
  curve       the first seed, full set, both methods at every budget (phase epochs scaled)

    python benchmarks/accuracy_at_equal_cost.py                       # 3 seeds, 100/25/10 %, DMT, 3 budgets
    python benchmarks/accuracy_at_equal_cost.py --seeds 0 --fractions 0.1 --budgets 1 --no-dmt   # a quick look

Prints a table and writes ``results.json`` and ``accuracy_at_equal_cost.png`` under ``--out``. Finished
pipelines are skipped on a rerun (their products exist), so an interrupted benchmark continues.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mmincubation.engine.runner import Phase, build_layout  # noqa: E402
from mmincubation.engine.runner.progress import Progress  # noqa: E402
from mmincubation.engine.runner.records import method_results  # noqa: E402

CONFIG = ROOT / 'configs' / 'benchmarks' / 'incubate_deep-vit-16x32-p7_fashion-mnist.py'


@dataclass(frozen=True)
class Schedule:
    """Epochs of each phase; E2E's is the smallest whole number costing at least the whole incubation."""

    meta: int
    incubate: int
    finetune: int
    e2e: int

    @classmethod
    def equal_cost(cls, meta: int, incubate: int, finetune: int, module_depths: list[int]) -> Schedule:
        """Block-epochs: meta K blocks; hybrid k K - 1 meta blocks + module k; fine-tune and E2E all blocks."""
        num_modules, depth = len(module_depths), sum(module_depths)
        cost = (num_modules * meta + sum(num_modules - 1 + d for d in module_depths) * incubate
                + depth * finetune)
        return cls(meta, incubate, finetune, math.ceil(cost / depth))

    def scaled(self, budget: float, module_depths: list[int]) -> Schedule:
        """Every incubation phase's epochs times ``budget`` (at least one each), E2E recomputed."""
        return self.equal_cost(*(max(1, round(e * budget)) for e in (self.meta, self.incubate, self.finetune)),
                               module_depths)


@dataclass(frozen=True)
class Run:
    experiment: str
    seed: int
    fraction: float
    budget: float
    dmt: bool = False

    def name(self, schedule: Schedule) -> str:
        """Work dir name; it holds the epochs, so a rerun with another schedule never reuses a pipeline."""
        return (f'{"dmt" if self.dmt else "std"}_seed{self.seed}_data{round(self.fraction * 100)}'
                f'_m{schedule.meta}i{schedule.incubate}f{schedule.finetune}e{schedule.e2e}')


def plan(seeds: list[int], fractions: list[float], budgets: list[float], dmt: bool) -> list[Run]:
    """The runs of the three experiments, each pipeline once (the curve reuses equal-cost's budget-1 runs)."""
    runs = [Run('equal-cost', seed, fraction, 1.0) for seed in seeds for fraction in fractions]
    if dmt:
        runs += [Run('dmt', seed, 1.0, 1.0, dmt=True) for seed in seeds]
    runs += [Run('curve', seeds[0], 1.0, budget) for budget in budgets
             if not any(r.seed == seeds[0] and r.fraction == 1.0 and r.budget == budget and not r.dmt for r in runs)]
    return runs


def cfg_options(run: Run, schedule: Schedule, train_images: int) -> list[str]:
    """``--cfg-options`` of one run: seed, training images, epochs of every phase (DMT: seed of its split)."""
    options = [f'randomness.seed={run.seed}',
               f'incubation.meta.train_cfg.max_epochs={schedule.meta}',
               f'incubation.incubate.train_cfg.max_epochs={schedule.incubate}',
               f'incubation.finetune.train_cfg.max_epochs={schedule.finetune}',
               f'incubation.e2e.train_cfg.max_epochs={schedule.e2e}']
    if run.dmt:
        return options + [f'incubation.dmt.seed={run.seed}']
    return options + [f'train_dataloader.dataset.indices={round(train_images * run.fraction)}']


def trained(run: Run, schedule: Schedule, out: Path) -> bool:
    """Whether the run's products are all there already (it is reused, not trained: no part of the ETA)."""
    work_dir = out / run.name(schedule)
    phases = ('finetune', ) if run.dmt else ('finetune', 'e2e')
    return all(Phase(phase).product(work_dir).is_file() for phase in phases)


def run_pipeline(run: Run, schedule: Schedule, config: Path, train_images: int, out: Path) -> dict:
    """Train (or reuse) one pipeline and return its per-method results."""
    work_dir = out / run.name(schedule)
    if run.dmt:  # same meta model as the seed's standard run: DMT only changes module incubation
        meta = Phase('meta').product(out / Run('equal-cost', run.seed, 1.0, run.budget).name(schedule))
        if meta.is_file() and not Phase('meta').work_dir(work_dir).exists():
            shutil.copytree(meta.parent, Phase('meta').work_dir(work_dir))
    # DMT: its own config (the dataset wrapper), no E2E twin (the seed's standard run has it)
    config = config.with_name(config.stem + '_dmt.py') if run.dmt else config
    phases = ['meta', 'incubate', 'assemble', 'finetune'] if run.dmt else ['all']
    command = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--phase', *phases,
               '--work-dir', str(work_dir), '--cfg-options', *cfg_options(run, schedule, train_images)]
    log = work_dir / 'pipeline.log'
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, 'a') as stream:
        subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, check=True)
    results = method_results(work_dir)
    print(f'  {run.name(schedule)}: {time.perf_counter() - start:.0f} s  '
          + '  '.join(f'{m} {r["top1"]:.2f}' for m, r in results.items()), flush=True)
    return results


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: list[dict]) -> list[dict]:
    """Rows of the table: one per (setting, method), mean and spread over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        run = record['run']
        for method, result in record['results'].items():
            if run['dmt'] and method == 'e2e':
                continue
            key = (run['dmt'], run['fraction'], run['budget'], method)
            groups.setdefault(key, []).append(result | dict(seed=run['seed']))
    rows = []
    for (dmt, fraction, budget, method), results in groups.items():
        top1, std = mean_std([r['top1'] for r in results])
        setting = 'DMT' if dmt else f'{round(fraction * 100)}% data'
        rows.append(dict(setting=setting, dmt=dmt, fraction=fraction, budget=budget, method=method,
                         top1_mean=top1, top1_std=std,
                         seeds=[r['seed'] for r in results], top1=[r['top1'] for r in results],
                         cost=statistics.fmean(r['cost'] for r in results),
                         wall_seconds=statistics.fmean(r['wall_seconds'] for r in results)))
    return rows


def format_table(rows: list[dict]) -> str:
    header = (f'{"setting":<10}{"budget":>7}  {"method":<16}{"top-1 mean +- std":>19}{"seeds":>7}'
              f'{"cost M blk-img":>16}{"wall s":>8}')
    names = {'incubation': 'Deep Incubation', 'e2e': 'E2E'}
    lines = [header, '-' * len(header)]
    for row in sorted(rows, key=lambda r: (*_setting_order(r), r['budget'], r['method'] != 'incubation')):
        lines.append(f'{row["setting"]:<10}{row["budget"]:>7g}  {names[row["method"]]:<16}'
                     f'{row["top1_mean"]:>11.2f} +- {row["top1_std"]:<4.2f}{len(row["seeds"]):>7}'
                     f'{row["cost"] / 1e6:>16.2f}{row["wall_seconds"]:>8.0f}')
    return '\n'.join(lines)


def _setting_order(row: dict) -> tuple[bool, float]:
    """Normal incubation before DMT, more data first."""
    return row['dmt'], -row['fraction']


def plot(rows: list[dict], out_file: Path, title: str = '') -> Path:
    """Left: test top-1 against cost at every budget (full data); right: every setting at budget 1 (bars from 0).
    ``title``: model, data and recipe, above both."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (curve, bars) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    styles = {'incubation': ('Deep Incubation', 'tab:blue'), 'e2e': ('E2E', 'tab:orange')}
    for method, (label, color) in styles.items():
        points = sorted((r['cost'] / 1e6, r['top1_mean'], r['top1_std']) for r in rows
                        if not r['dmt'] and r['fraction'] == 1.0 and r['method'] == method)
        if points:
            costs, top1, std = zip(*points)
            curve.errorbar(costs, top1, yerr=std, marker='o', capsize=3, label=label, color=color)
    curve.set(xlabel='training cost (million block-images, all phases)', ylabel='test top-1 (%)',
              title='accuracy vs cost (100% data)')
    curve.grid(alpha=.3)
    curve.legend()
    settings = [r['setting'] for r in sorted((r for r in rows if r['budget'] == 1.0 and r['method'] == 'incubation'),
                                             key=_setting_order)]
    for offset, (method, (label, color)) in zip((-0.2, 0.2), styles.items()):
        found = [(i, r) for i, s in enumerate(settings) for r in rows
                 if r['setting'] == s and r['budget'] == 1.0 and r['method'] == method]
        if found:
            bars.bar([i + offset for i, _ in found], [r['top1_mean'] for _, r in found], width=0.4, label=label,
                     yerr=[r['top1_std'] for _, r in found], capsize=3, color=color)
    bars.set_xticks(range(len(settings)), settings)
    bars.set(ylim=(0, 100), ylabel='test top-1 (%)', title='equal cost, mean +- std over seeds')
    bars.legend(loc='lower right')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)
    return out_file


def describe_machine() -> str:
    """CPU model and count (``platform.processor()`` is empty on Linux)."""
    cpuinfo = Path('/proc/cpuinfo')
    models = [line.split(':', 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
              if line.startswith('model name')]
    return f'{os.cpu_count()} CPUs, {models[0] if models else platform.machine()}'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', type=Path, default=CONFIG)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--fractions', type=float, nargs='+', default=[1.0, 0.25, 0.1],
                        help="training-set fractions (of the config's training set)")
    parser.add_argument('--budgets', type=float, nargs='+', default=[0.5, 1.0, 1.5],
                        help='budget scales of the accuracy-vs-cost curve (phase epochs scaled)')
    parser.add_argument('--meta-epochs', type=int, default=6)
    parser.add_argument('--incubate-epochs', type=int, default=3)
    parser.add_argument('--finetune-epochs', type=int, default=3)
    parser.add_argument('--no-dmt', dest='dmt', action='store_false', help='skip the DMT runs')
    parser.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'accuracy_at_equal_cost')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = Config.fromfile(str(args.config))
    depths = list(build_layout(cfg).depths)
    train_images = cfg.train_dataloader.dataset.indices  # the config's training set (first N images)
    if not isinstance(train_images, int):
        raise ValueError(f'{args.config}: train_dataloader.dataset.indices must be the training-set size (an int)')
    base = Schedule.equal_cost(args.meta_epochs, args.incubate_epochs, args.finetune_epochs, depths)
    runs = plan(args.seeds, args.fractions, args.budgets, args.dmt)
    print(f'{len(runs)} pipelines on {train_images} training images; budget 1 = {base}', flush=True)
    start = time.perf_counter()
    records, progress = [], Progress(len(runs), noun='pipeline')
    for index, run in enumerate(runs, 1):
        schedule = base.scaled(run.budget, depths)
        left = [('budget', 0 if trained(later, base.scaled(later.budget, depths), args.out) else later.budget)
                for later in runs[index - 1:]]
        print(progress.announce(index, run.name(schedule), left), flush=True)
        started, reused = time.perf_counter(), trained(run, schedule, args.out)
        results = run_pipeline(run, schedule, args.config, train_images, args.out)
        progress.done(('budget', 0 if reused else run.budget), time.perf_counter() - started)
        records.append(dict(run=asdict(run), schedule=asdict(schedule), results=results))
    rows = summarize(records)
    table = format_table(rows)
    png = plot(rows, args.out / 'accuracy_at_equal_cost.png',
               title=f'{args.config.stem}: {train_images} training images; budget 1 = {base}')
    summary = dict(command=' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                   date=time.strftime('%Y-%m-%d'), machine=describe_machine(),
                   config=str(args.config.relative_to(ROOT)), module_depths=depths, train_images=train_images,
                   records=records, rows=rows,
                   wall_seconds=time.perf_counter() - start)
    (args.out / 'results.json').write_text(json.dumps(summary, indent=1) + '\n')
    print(f'\n{table}\n\nplot {png}\nresults {args.out / "results.json"}')
    return summary


if __name__ == '__main__':
    main()
