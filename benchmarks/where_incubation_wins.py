"""Where does Deep Incubation win? E2E against incubation (scratch or grown modules) at equal cost.

The paper's gains are largest where E2E training struggles: very deep, narrow models (CIFAR-100
DeiT-T-128: 77.2 incubated vs 69.4 E2E). This benchmark trains a deep, narrow ViT on Fashion-MNIST
at two depths and several budgets, every method at the same total cost (block-images, meta
pretraining included), with the ordinary pipeline command ``tools/train.py CONFIG --phase ...``:

  scratch   Deep Incubation as in the paper: meta model -> K modules from scratch -> assemble -> fine-tune
  grown     the same pipeline with ``incubation.module_init='meta'`` (modules grown from the meta model),
            sharing the scratch run's meta model
  stack     the growth peer G_stack: the scratch run's meta model, its K blocks stacked to the full depth,
            then end to end for the budget left after the meta model
  grow      every module grown from that meta model at once (as grown modules are), then end to end: what
            incubation's independent module jobs add over growing
  e2e       the full model trained end to end
references at the deep setting (where a user must see whether the deep model pays at all):
  meta      the K-block meta model trained end to end for the whole budget
  shallow   a 4x shallower twin trained end to end for the whole budget
  shallow-epochs  the shallow twin at E2E's *epochs* (a quarter of the cost): if the deep model is no
            better at equal epochs, E2E training of the deep model is what is hard

    python benchmarks/where_incubation_wins.py              # the grid of docs/benchmarks.md, ~1 h on 2 idle CPU cores
    python benchmarks/where_incubation_wins.py --depths 16 --seeds 0 --budgets 1 --no-refs   # a quick look

Runs share the cores as ``--jobs`` processes of ``cores / jobs`` threads each (tiny models scale
poorly with threads). A finished run is reused on a rerun (its product exists), so an interrupted
benchmark continues. Prints the table and writes ``results.json`` and ``where_incubation_wins.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.accuracy_at_equal_cost import Schedule, describe_machine, mean_std  # noqa: E402
from mmincubation.engine.runner import Phase  # noqa: E402
from mmincubation.engine.runner.progress import Progress  # noqa: E402
from mmincubation.engine.runner.records import method_results  # noqa: E402
from mmincubation.phases import METHODS as METHOD_PHASES  # noqa: E402

CONFIG = ROOT / 'configs' / 'benchmarks' / 'incubate_deep-vit-16x32-p7_fashion-mnist.py'
NUM_MODULES = 4
#: The ways to train the deep model at equal cost, then the references.
MAIN = ('scratch', 'grown', 'stack', 'grow', 'e2e')
#: The peers with their end-to-end epochs rounded down instead of up: no more cost than incubation (the peers'
#: whole epochs after the meta model otherwise give them up to one epoch of the full model more). Every seed
#: of the main setting.
PEERS_DOWN = ('stack-down', 'grow-down')
METHODS = MAIN + PEERS_DOWN + ('meta', 'shallow', 'shallow-epochs')
#: The methods that share the scratch run's meta model.
SHARE_META = ('grown', 'stack', 'grow') + PEERS_DOWN
LABELS = {'scratch': 'incubation (scratch modules)', 'grown': 'incubation (grown modules)',
          'stack': 'stack (G_stack) + E2E', 'grow': 'grow all modules + E2E', 'e2e': 'E2E',
          'stack-down': 'stack + E2E, epochs rounded down', 'grow-down': 'grow + E2E, epochs rounded down',
          'meta': 'meta model alone (ref.)', 'shallow': '4x shallower E2E (ref.)',
          'shallow-epochs': '4x shallower, E2E epochs'}


@dataclass(frozen=True)
class Setting:
    """One point of the grid: the deep model's depth, a seed, a training-set fraction and a budget scale."""

    depth: int
    seed: int
    fraction: float
    budget: float

    def name(self, schedule: Schedule) -> str:
        """Work dir name; it holds the epochs, so a rerun with another schedule never reuses a run."""
        return (f'depth{self.depth}_seed{self.seed}_data{round(self.fraction * 100)}'
                f'_m{schedule.meta}i{schedule.incubate}f{schedule.finetune}')

    def module_depths(self) -> list[int]:
        return [self.depth // NUM_MODULES] * NUM_MODULES


def block_epochs(schedule: Schedule, depths: list[int]) -> int:
    """The incubation pipeline's cost in block-epochs (meta, every hybrid, fine-tune)."""
    k = len(depths)
    return k * schedule.meta + sum((k - 1 + d) * schedule.incubate for d in depths) + sum(depths) * schedule.finetune


def e2e_runs(setting: Setting, schedule: Schedule) -> dict[str, tuple[int, int]]:
    """(blocks, epochs) of every end-to-end run of a setting: equal cost (rounded up) or, for
    ``shallow-epochs``, E2E's epochs."""
    cost, shallow = block_epochs(schedule, setting.module_depths()), setting.depth // 4
    return {'e2e': (setting.depth, schedule.e2e), 'meta': (NUM_MODULES, math.ceil(cost / NUM_MODULES)),
            'shallow': (shallow, math.ceil(cost / shallow)), 'shallow-epochs': (shallow, schedule.e2e)}


def common_options(setting: Setting, blocks: int, train_images: int) -> list[str]:
    return [f'randomness.seed={setting.seed}', f'model.backbone.arch.num_layers={blocks}',
            f'incubation.num_modules={NUM_MODULES}',
            f'train_dataloader.dataset.indices={round(train_images * setting.fraction)}']


def commands(setting: Setting, method: str, schedule: Schedule, config: Path, train_images: int,
             out: Path) -> list[list[str]]:
    """The ``tools/train.py`` command lines of one method at one setting (incubation: one per variant)."""
    train = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config)]
    work_dir = out / setting.name(schedule) / method
    if method in ('scratch', 'grown'):
        epochs = [f'incubation.meta.train_cfg.max_epochs={schedule.meta}',
                  f'incubation.incubate.train_cfg.max_epochs={schedule.incubate}',
                  f'incubation.finetune.train_cfg.max_epochs={schedule.finetune}',
                  f'incubation.module_init={"meta" if method == "grown" else "scratch"}']
        return [[*train, '--phase', 'meta', 'incubate', 'assemble', 'finetune', '--work-dir', str(work_dir),
                 '--cfg-options', *common_options(setting, setting.depth, train_images), *epochs]]
    if method_of(method) in ('stack', 'grow'):  # the budget left after the meta model, in the full model's epochs
        left = block_epochs(schedule, setting.module_depths()) - NUM_MODULES * schedule.meta
        epochs = (math.floor if method in PEERS_DOWN else math.ceil)(left / setting.depth)
        return [[*train, '--phase', method_of(method), '--work-dir', str(work_dir), '--cfg-options',
                 *common_options(setting, setting.depth, train_images),
                 f'incubation.meta.train_cfg.max_epochs={schedule.meta}',  # the shared meta model's recipe
                 f'incubation.{method_of(method)}.train_cfg.max_epochs={epochs}']]
    blocks, epochs = e2e_runs(setting, schedule)[method]
    return [[*train, '--phase', 'e2e', '--work-dir', str(work_dir), '--cfg-options',
             *common_options(setting, blocks, train_images), f'incubation.e2e.train_cfg.max_epochs={epochs}']]


def product(work_dir: Path, method: str) -> Path:
    return Phase(METHOD_PHASES[method_of(method)]).product(work_dir)


def method_of(method: str) -> str:
    """The pipeline method (:data:`mmincubation.phases.METHODS`) whose result a benchmark method is."""
    if method in ('scratch', 'grown'):
        return 'incubation'
    return method.removesuffix('-down') if method in ('stack', 'grow') + PEERS_DOWN else 'e2e'


def run_method(setting: Setting, method: str, schedule: Schedule, config: Path, train_images: int, out: Path,
               threads: int, train: bool = True) -> dict | None:
    """Train (or reuse: the pipeline skips finished phases) one method at one setting; ``grown`` copies the
    scratch run's meta model first, as ``stack`` and ``grow`` do. With ``train=False`` only a finished run is read
    (else None)."""
    work_dir = out / setting.name(schedule) / method
    if not product(work_dir, method).is_file() and not train:
        return None
    if train:
        if method in SHARE_META:  # the scratch run's meta model: only what is made of it differs
            scratch_meta = Phase('meta').product(out / setting.name(schedule) / 'scratch')
            if not scratch_meta.is_file():
                raise FileNotFoundError(f'{scratch_meta}: the scratch run must train the meta model first')
            if not Phase('meta').product(work_dir).is_file():
                shutil.copytree(scratch_meta.parent, Phase('meta').work_dir(work_dir), dirs_exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))  # this checkout's code
        with open(work_dir / 'run.log', 'a') as log:
            for command in commands(setting, method, schedule, config, train_images, out):
                subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    result = method_results(work_dir)[method_of(method)]
    if result['top1'] is None:  # killed before its test: the next run without --finished-only tests it
        return None
    print(f'  {setting.name(schedule)} {method:<15} top-1 {result["top1"]:6.2f}  '
          f'cost {result["cost"] / 1e6:6.2f} M  {result["wall_seconds"]:5.0f} s', flush=True)
    return dict(setting=asdict(setting), method=method, schedule=asdict(schedule), **result)


def plan(depths: list[int], seeds: list[int], budgets: list[float], main_depth: int, main_budget: float,
         fractions: list[float], refs: bool) -> list[tuple[Setting, str]]:
    """Every (setting, method) once, in the order they run: every seed at the main setting, then (cheapest
    first) every depth and budget (first seed) and the other data fractions at the main setting (first
    seed); then the references at the main depth, first seed, full data, every budget."""
    others = [Setting(d, seeds[0], 1.0, b) for d in depths for b in budgets]
    others += [Setting(main_depth, seeds[0], f, main_budget) for f in fractions if f != 1.0]
    settings = [Setting(main_depth, s, 1.0, main_budget) for s in seeds]  # the main setting first, then cheap first
    settings = list(dict.fromkeys(settings + sorted(others, key=lambda s: s.depth * s.budget * s.fraction)))
    jobs = [(setting, method) for setting in settings for method in MAIN]
    jobs += [(setting, method) for setting in settings for method in PEERS_DOWN
             if setting.depth == main_depth and setting.fraction == 1.0 and setting.budget == 1.0]
    # The references last (the meta model's many short epochs are slow for their cost): first seed, main depth.
    return jobs + [(setting, method) for setting in settings for method in METHODS[len(MAIN + PEERS_DOWN):]
                   if refs and setting.depth == main_depth and setting.seed == seeds[0] and setting.fraction == 1.0]


def run_all(jobs: list[tuple[Setting, str]], schedules: dict, args: argparse.Namespace) -> list[dict]:
    """Run the jobs on ``args.jobs`` workers; a job that shares the meta model waits for its setting's ``scratch``
    job."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    progress, lock, started = Progress(len(jobs), noun='run', workers=args.jobs), threading.Lock(), [0]

    def work(setting: Setting, method: str) -> tuple[str, float]:  # a deeper or longer run costs more
        done = product(args.out / setting.name(schedules[setting]) / method, method).is_file()
        return 'depth-budget', 0 if done else setting.depth * setting.budget

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {}
        for setting, method in jobs:  # a setting's runs sharing the meta model come after its scratch run
            def job(setting=setting, method=method):
                if method in SHARE_META and (setting, 'scratch') in futures:
                    futures[setting, 'scratch'].result()
                with lock:
                    started[0] += 1
                    print(progress.announce(started[0], f'{setting.name(schedules[setting])} {method}',
                                            [work(*later) for later in jobs[started[0] - 1:]]), flush=True)
                begun, planned = time.perf_counter(), work(setting, method)
                record = run_method(setting, method, schedules[setting], args.config, args.train_images, args.out,
                                    threads, train=not args.finished_only)
                with lock:
                    progress.done(planned, time.perf_counter() - begun)
                return record
            futures[setting, method] = pool.submit(job)
        return [record for future in futures.values() if (record := future.result()) is not None]


def summarize(records: list[dict]) -> list[dict]:
    """One row per (depth, fraction, budget, method): mean and spread over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        s = record['setting']
        groups.setdefault((s['depth'], s['fraction'], s['budget'], record['method']), []).append(record)
    rows = []
    for (depth, fraction, budget, method), found in sorted(groups.items(), key=lambda item: (
            item[0][0], -item[0][1], item[0][2], METHODS.index(item[0][3]))):
        top1, std = mean_std([r['top1'] for r in found])
        rows.append(dict(depth=depth, fraction=fraction, budget=budget, method=method, top1_mean=top1, top1_std=std,
                         top1=[r['top1'] for r in found], seeds=[r['setting']['seed'] for r in found],
                         cost=statistics.fmean(r['cost'] for r in found),
                         wall_seconds=statistics.fmean(r['wall_seconds'] for r in found)))
    return rows


def paired(winner: dict, other: dict) -> tuple[float, float | None]:
    """Mean and spread (sample std) of the per-seed differences ``winner - other`` over the seeds both ran;
    no spread with one seed."""
    by_seed = dict(zip(other['seeds'], other['top1']))
    differences = [top1 - by_seed[seed] for seed, top1 in zip(winner['seeds'], winner['top1']) if seed in by_seed]
    return statistics.fmean(differences), statistics.stdev(differences) if len(differences) > 1 else None


def ranked_margins(found: dict[str, dict], labels: dict[str, str]) -> tuple[str, list[str]]:
    """The best of ``found`` (rows with ``top1_mean``, ``seeds``, ``top1``) and its paired margin over each other,
    best first: ``'+2.00 +- 1.65 over stack (a win)'``; a margin inside its seeds' spread is called a tie (with one
    seed there is no spread to judge by)."""
    ranked = sorted(found, key=lambda m: -found[m]['top1_mean'])
    margins = []
    for other in ranked[1:]:
        mean, spread = paired(found[ranked[0]], found[other])
        call = ('one seed' if spread is None else 'a tie' if mean <= spread else 'a win')
        spread_text = '' if spread is None else f' +- {spread:.2f}'
        margins.append(f'{mean:+.2f}{spread_text} over {labels[other]} ({call})')
    return ranked[0], margins


def verdicts(rows: list[dict]) -> list[str]:
    """Per setting: the best way to train the deep model at equal cost, and its paired margin over each other
    (:func:`ranked_margins`)."""
    lines = []
    settings = dict.fromkeys((r['depth'], r['fraction'], r['budget']) for r in rows)
    for depth, fraction, budget in settings:
        found = {r['method']: r for r in rows if (r['depth'], r['fraction'], r['budget']) == (depth, fraction, budget)}
        best, margins = ranked_margins({m: found[m] for m in MAIN + PEERS_DOWN if m in found}, LABELS)
        refs = [m for m in ('meta', 'shallow') if m in found and found[m]['top1_mean'] > found[best]['top1_mean']]
        lines.append(f'depth {depth}, {round(fraction * 100)}% data, budget {budget:g}: {LABELS[best]} is best '
                     f'({"; ".join(margins)})' + (f'; but {" and ".join(LABELS[m] for m in refs)} beat(s) it'
                                                   if refs else ''))
    return lines


def format_table(rows: list[dict]) -> str:
    header = (f'{"depth":>5}{"data":>6}{"budget":>7}  {"method":<30}{"top-1 mean +- std":>19}{"seeds":>6}'
              f'{"cost M blk-img":>15}{"wall s":>8}')
    lines = [header, '-' * len(header)]
    for r in rows:
        lines.append(f'{r["depth"]:>5}{round(r["fraction"] * 100):>5}%{r["budget"]:>7g}  {LABELS[r["method"]]:<30}'
                     f'{r["top1_mean"]:>11.2f} +- {r["top1_std"]:<4.2f}{len(r["seeds"]):>6}'
                     f'{r["cost"] / 1e6:>15.2f}{r["wall_seconds"]:>8.0f}')
    return '\n'.join(lines)


def plot(rows: list[dict], out_file: Path) -> Path:
    """One panel per depth: test top-1 against total cost (full data), one line per method."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    depths = sorted({r['depth'] for r in rows})
    fig, axes = plt.subplots(1, len(depths), figsize=(5.5 * len(depths) + 2.5, 4), dpi=120, squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for method in METHODS:
            points = sorted((r['cost'] / 1e6, r['top1_mean'], r['top1_std']) for r in rows
                            if r['depth'] == depth and r['fraction'] == 1.0 and r['method'] == method)
            if points:
                cost, top1, std = zip(*points)
                ax.errorbar(cost, top1, yerr=std, marker='o', capsize=3, label=LABELS[method],
                            linestyle='--' if method in ('meta', 'shallow', 'shallow-epochs') else '-')
        ax.set(xlabel='training cost (million block-images, all phases)', ylabel='test top-1 (%)',
               title=f'ViT {depth} blocks x width 32, Fashion-MNIST')
        ax.grid(alpha=.3)
    axes[0][-1].legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0))  # beside the panels, hiding no point
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)
    return out_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', type=Path, default=CONFIG)
    parser.add_argument('--depths', type=int, nargs='+', default=[16, 64], help='deep-model depths (multiples of 16)')
    parser.add_argument('--main-depth', type=int, help='depth of the seeds, data and reference runs (default: deepest)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--budgets', type=float, nargs='+', default=[0.5, 1.0, 2.0])
    parser.add_argument('--fractions', type=float, nargs='+', default=[1.0, 0.25],
                        help='training-set fractions at the main setting')
    parser.add_argument('--train-images', type=int, default=2500, help='training set: the first N images')
    parser.add_argument('--meta-epochs', type=int, default=6)
    parser.add_argument('--incubate-epochs', type=int, default=2)
    parser.add_argument('--finetune-epochs', type=int, default=2)
    parser.add_argument('--no-refs', dest='refs', action='store_false', help='skip the reference runs')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel')
    parser.add_argument('--finished-only', action='store_true',
                        help='train nothing: the table and figure of the runs that have finished')
    parser.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'where_incubation_wins')
    args = parser.parse_args(argv)
    if any(d % 16 for d in args.depths):
        parser.error(f'--depths {args.depths}: each must split into 4 modules and have a 4x shallower twin '
                     'of whole modules (multiples of 16)')
    args.main_depth = args.main_depth or max(args.depths)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    jobs = plan(args.depths, args.seeds, args.budgets, args.main_depth, 1.0, args.fractions, args.refs)
    base = (args.meta_epochs, args.incubate_epochs, args.finetune_epochs)
    schedules = {s: Schedule.equal_cost(*base, s.module_depths()).scaled(s.budget, s.module_depths())
                 for s, _ in jobs}
    print(f'{len(jobs)} runs on {args.jobs} workers; training set {args.train_images} images', flush=True)
    start = time.perf_counter()
    records = run_all(jobs, schedules, args)
    rows = summarize(records)
    table, verdict = format_table(rows), verdicts(rows)
    png = plot(rows, args.out / 'where_incubation_wins.png')
    summary = dict(command=' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                   date=time.strftime('%Y-%m-%d'), machine=describe_machine(),
                   config=str(args.config.relative_to(ROOT)), train_images=args.train_images, records=records,
                   rows=rows, verdicts=verdict,
                   wall_seconds=time.perf_counter() - start)
    (args.out / 'results.json').write_text(json.dumps(summary, indent=1) + '\n')
    print(f'\n{table}\n\n' + '\n'.join(verdict) + f'\n\nplot {png}\nresults {args.out / "results.json"}')
    return summary


if __name__ == '__main__':
    main()
