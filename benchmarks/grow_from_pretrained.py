"""Grow a deep ViT from a smaller pretrained one: a pretrained network as the meta model (tools/make_meta.py).

A user who has a trained model (here an 8-block ViT trained end to end, the *source*) wants a deeper one
(32 blocks) without paying for meta pretraining. ``tools/make_meta.py`` turns the source into the
target's meta model (its stem, K of its blocks, its final norm and head); the pipeline then incubates
the K modules (grown from the meta model), assembles and fine-tunes. Every run is the ordinary
pipeline command in its own work dir, on Fashion-MNIST (the first N training images, top-1 on the
10k test set), width 32, patch 7:

  source            the pretrained model: the source depth trained end to end (its cost was paid before)
  pretrained        meta model = K=4 evenly spaced source blocks (first and last included) -> incubate -> fine-tune
  pretrained-all    meta model = every source block (K = source depth, modules of target/K blocks),
                    incubation epochs set for the same new cost as ``pretrained``
  e2e               (a) the target trained end to end at the same *new* cost (whole epochs, rounded up)
  scratch-meta      (b) the full pipeline, K=4, its meta model trained from scratch (same incubate/fine-tune)
  stack             the growth peer G_stack from ``pretrained``'s meta model: its K blocks stacked to the target
                    depth, then end to end at the same new cost
  grow              every module grown from that meta model at once, then end to end at the same new cost
references at the first seed:
  pretrained-scratch-modules  ``pretrained`` with the paper's modules from scratch (incubation.module_init='scratch')
  source-longer     the source trained on (from its weights) for the new cost: was the deeper model worth it?
  e2e-total         the target end to end at the total cost, the source's pretraining included

Cost is counted in block-images (blocks of the trained network x training images), read back from the
phase records. *New* cost is what a run trains; a run made from the source also records the source's
cost (from the meta checkpoint's tag), and the table shows both and their total.

    python benchmarks/grow_from_pretrained.py               # 3 seeds + references, ~1 h on 2 idle CPU cores
    python benchmarks/grow_from_pretrained.py --seeds 0 --no-refs --no-all   # a quick look
    python benchmarks/grow_from_pretrained.py --finished-only                 # the table of what has finished
    python benchmarks/grow_from_pretrained.py --source-width 32 --target-width 64 --no-all --no-refs
        # width growth: the width-32 source widened into a width-64 pipeline's meta model (make_meta), against
        # (b), the width-64 meta model from scratch, and (a), the width-64 model E2E at the same new cost

One run at a time (all cores). A finished run is reused on a rerun, so an interrupted benchmark
continues. Prints the table and writes ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.accuracy_at_equal_cost import Schedule, describe_machine, mean_std  # noqa: E402
from benchmarks.where_incubation_wins import block_epochs, ranked_margins  # noqa: E402
from mmincubation.engine.runner.progress import Progress  # noqa: E402
from mmincubation.engine.runner.records import method_results  # noqa: E402
from mmincubation.make_meta import pretrained_record  # noqa: E402

CONFIG = ROOT / 'configs' / 'benchmarks' / 'incubate_deep-vit-16x32-p7_fashion-mnist.py'
NUM_MODULES = 4
ARMS = ('source', 'pretrained', 'pretrained-all', 'e2e', 'scratch-meta', 'stack', 'grow')
#: The growth peers: the meta model made of the source, then the full model end to end (the phase of that name).
PEERS = ('stack', 'grow')
#: Channels per attention head when ``--source-width`` / ``--target-width`` set a width (the config's: 32 / 2 heads).
HEAD_DIMS = 16
REFS = ('pretrained-scratch-modules', 'source-longer', 'e2e-total')
LABELS = {'source': 'source (pretrained, {s} blocks)', 'pretrained': 'from pretrained, K=4 of {s} blocks',
          'pretrained-all': 'from pretrained, all {s} blocks (K={s})', 'e2e': '(a) E2E at the new cost',
          'scratch-meta': '(b) pipeline, meta from scratch', 'stack': 'from pretrained, K=4, stacked + E2E',
          'grow': 'from pretrained, K=4, grown + E2E',
          'pretrained-scratch-modules': 'from pretrained, K=4, scratch modules',
          'source-longer': 'source trained on, new cost', 'e2e-total': 'E2E at the total cost'}
#: Runs that start from the source: their pretraining cost is the source's.
FROM_SOURCE = ('pretrained', 'pretrained-all', 'pretrained-scratch-modules', 'source-longer', *PEERS)
#: Paired differences of top-1 shown for every run: against (a), (b) and the source itself.
DIFFS = {'vs_e2e': '(a)', 'vs_scratch-meta': '(b)', 'vs_source': 'the source'}


@dataclass(frozen=True)
class Setting:
    """One seed of the experiment: source and target depths, the source's epochs and the pipeline's."""

    seed: int
    source_depth: int
    source_epochs: int
    target_depth: int
    meta_epochs: int
    incubate_epochs: int
    finetune_epochs: int
    train_images: int
    source_width: int | None = None
    target_width: int | None = None

    def name(self) -> str:
        """Work dir name; it holds every epoch count, so a rerun with another schedule never reuses a run."""
        widths = ('' if self.source_width is self.target_width is None
                  else f'_w{self.source_width or "cfg"}to{self.target_width or "cfg"}')
        return (f'seed{self.seed}_src{self.source_depth}e{self.source_epochs}_tgt{self.target_depth}'
                f'_m{self.meta_epochs}i{self.incubate_epochs}f{self.finetune_epochs}_n{self.train_images}{widths}')

    def width_options(self, source: bool) -> list[str]:
        """The backbone's width for the source or the target, heads of :data:`HEAD_DIMS` channels (none: the
        config's width)."""
        width = self.source_width if source else self.target_width
        if width is None:
            return []
        return [f'model.backbone.arch.embed_dims={width}', f'model.backbone.arch.num_heads={width // HEAD_DIMS}',
                f'model.backbone.arch.feedforward_channels={4 * width}', f'model.head.in_channels={width}']

    def modules(self, arm: str) -> int:
        return self.source_depth if arm == 'pretrained-all' else NUM_MODULES

    def depths(self, arm: str) -> list[int]:
        k = self.modules(arm)
        return [self.target_depth // k] * k

    def incubate_epochs_of(self, arm: str) -> int:
        """``pretrained-all``'s hybrids are deeper in total: fewer epochs for about the same cost."""
        if arm != 'pretrained-all':
            return self.incubate_epochs
        k4, all_ = (block_epochs(Schedule(0, 1, 0, 0), self.depths(a)) for a in ('pretrained', arm))
        return max(1, round(self.incubate_epochs * k4 / all_))

    def new_cost(self) -> int:
        """``pretrained``'s new cost in block-epochs (hybrids and fine-tune, no meta pretraining)."""
        return block_epochs(Schedule(0, self.incubate_epochs, self.finetune_epochs, 0), self.depths('pretrained'))

    def e2e_epochs(self, arm: str) -> int:
        """Whole epochs of an end-to-end run costing at least the new (or the total) cost."""
        if arm == 'source':
            return self.source_epochs
        if arm == 'source-longer':
            return math.ceil(self.new_cost() / self.source_depth)
        total = self.new_cost() + (self.source_depth * self.source_epochs if arm == 'e2e-total' else 0)
        return math.ceil(total / self.target_depth)


def options(setting: Setting, arm: str) -> list[str]:
    """``--cfg-options`` of a run: seed, data, depth, modules and every phase's epochs."""
    source = arm in ('source', 'source-longer')
    blocks = setting.source_depth if source else setting.target_depth
    common = [f'randomness.seed={setting.seed}', f'train_dataloader.dataset.indices={setting.train_images}',
              f'model.backbone.arch.num_layers={blocks}',
              f'incubation.num_modules={1 if source else setting.modules(arm)}', *setting.width_options(source)]
    if arm in ('source', 'source-longer', 'e2e', 'e2e-total'):
        return common + [f'incubation.e2e.train_cfg.max_epochs={setting.e2e_epochs(arm)}']
    if arm in PEERS:  # the meta model is the source's (make_meta), so the whole new cost is the end-to-end part
        return common + [f'incubation.{arm}.train_cfg.max_epochs={setting.e2e_epochs("e2e")}']
    return common + [f'incubation.meta.train_cfg.max_epochs={setting.meta_epochs}',
                     f'incubation.incubate.train_cfg.max_epochs={setting.incubate_epochs_of(arm)}',
                     f'incubation.finetune.train_cfg.max_epochs={setting.finetune_epochs}',
                     f'incubation.module_init={"scratch" if arm == "pretrained-scratch-modules" else "meta"}']


def commands(setting: Setting, arm: str, config: Path, out: Path) -> list[list[str]]:
    """The command lines of one run: ``tools/make_meta.py`` first for the runs made from the source."""
    work_dir = out / setting.name() / arm
    source = out / setting.name() / 'source' / 'e2e' / 'e2e.pth'
    tool = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir)]
    if arm in ('source', 'e2e', 'e2e-total'):
        return [[*tool, '--phase', 'e2e', '--cfg-options', *options(setting, arm)]]
    if arm == 'source-longer':
        return [[*tool, '--phase', 'e2e', '--cfg-options', *options(setting, arm), f'load_from={source}']]
    if arm == 'scratch-meta':
        return [[*tool, '--phase', 'meta', 'incubate', 'assemble', 'finetune', '--cfg-options', *options(setting, arm)]]
    make_meta = [sys.executable, str(ROOT / 'tools' / 'make_meta.py'), str(source), str(config),
                 '--work-dir', str(work_dir), '--cfg-options', *options(setting, arm)]
    phases = [arm] if arm in PEERS else ['incubate', 'assemble', 'finetune']
    return ([make_meta] * (not (work_dir / 'meta' / 'meta.pth').is_file())
            + [[*tool, '--phase', *phases, '--cfg-options', *options(setting, arm)]])


def finished(work_dir: Path, arm: str) -> dict | None:
    """The run's method result (test top-1, new cost, wall time), or None before its test."""
    result = method_results(work_dir).get(arm if arm in PEERS else 'incubation' if arm in (
        'pretrained', 'pretrained-all', 'scratch-meta', 'pretrained-scratch-modules') else 'e2e')
    return result if result and result['top1'] is not None else None


def run(setting: Setting, arm: str, config: Path, out: Path, train: bool) -> dict | None:
    """Train (or reuse) one run and return its record; with ``train=False`` only a finished run is read."""
    work_dir = out / setting.name() / arm
    if train and finished(work_dir, arm) is None:
        work_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count()),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))  # this checkout's code
        with open(work_dir / 'run.log', 'a') as log:
            for command in commands(setting, arm, config, out):
                subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    result = finished(work_dir, arm)
    if result is None:
        return None
    pretraining = dict(cost=0.0, wall_seconds=0.0)
    if arm == 'source-longer':
        pretraining = finished(out / setting.name() / 'source', 'source')
    elif arm in FROM_SOURCE:
        pretraining = pretrained_record(work_dir / 'meta' / 'meta.pth')
    record = dict(setting=asdict(setting), arm=arm, top1=result['top1'], new_cost=result['cost'],
                  pretraining_cost=pretraining['cost'], wall_seconds=result['wall_seconds'],
                  pretraining_wall_seconds=pretraining['wall_seconds'])
    print(f'  {setting.name()} {arm:<27} top-1 {record["top1"]:6.2f}  new {record["new_cost"] / 1e6:5.2f} M  '
          f'pretraining {(record["pretraining_cost"] or 0) / 1e6:5.2f} M  {record["wall_seconds"]:5.0f} s', flush=True)
    return record


def plan(seeds: list[int], all_blocks: bool, refs: bool, arms: Sequence[str] = ARMS) -> list[tuple[int, str]]:
    """(seed, arm) in the order they run: every seed's main arms (of ``arms``; the source always, as every other
    run reads it), then ``pretrained-all``, then the references."""
    wanted = [arm for arm in ARMS if arm != 'pretrained-all' and (arm in arms or arm == 'source')]
    main = [(seed, arm) for seed in seeds for arm in wanted]
    all_blocks = all_blocks and 'pretrained-all' in arms
    return main + [(seed, 'pretrained-all') for seed in seeds if all_blocks] + [(seeds[0], arm) for arm in REFS if refs]


def summarize(records: list[dict]) -> list[dict]:
    """One row per arm: top-1 mean and spread over seeds, costs (means), and the paired differences
    of every arm against (a) and (b) over the seeds both finished."""
    by_arm: dict[str, dict[int, dict]] = {}
    for record in records:
        by_arm.setdefault(record['arm'], {})[record['setting']['seed']] = record
    rows = []
    for arm in [a for a in ARMS + REFS if a in by_arm]:
        found = by_arm[arm]
        top1, std = mean_std([r['top1'] for r in found.values()])
        row = dict(arm=arm, seeds=sorted(found), top1=[found[s]['top1'] for s in sorted(found)], top1_mean=top1,
                   top1_std=std, new_cost=mean_std([r['new_cost'] for r in found.values()])[0],
                   pretraining_cost=mean_std([r['pretraining_cost'] or 0 for r in found.values()])[0],
                   wall_seconds=mean_std([r['wall_seconds'] for r in found.values()])[0])
        for other in ('source', 'e2e', 'scratch-meta'):
            paired = [found[s]['top1'] - by_arm[other][s]['top1'] for s in found if s in by_arm.get(other, {})]
            if paired and other != arm:
                row[f'vs_{other}'] = mean_std(paired)
        rows.append(row)
    return rows


def format_table(rows: list[dict], source_depth: int) -> str:
    header = (f'{"run":<40}{"top-1 mean +- std":>19}{"seeds":>6}{"new cost":>10}{"pretrain":>10}{"total":>8}'
              f'{"vs (a)":>15}{"vs (b)":>15}{"vs source":>15}')
    lines = [header, f'{"":<65}{"(M block-images)":>28}', '-' * len(header)]
    for r in rows:
        diffs = [f'{r[k][0]:+6.2f} +- {r[k][1]:<4.2f}' if k in r else '-' for k in DIFFS]
        lines.append(f'{LABELS[r["arm"]].format(s=source_depth):<40}{r["top1_mean"]:>11.2f} +- {r["top1_std"]:<4.2f}'
                     f'{len(r["seeds"]):>6}{r["new_cost"] / 1e6:>10.2f}{r["pretraining_cost"] / 1e6:>10.2f}'
                     f'{(r["new_cost"] + r["pretraining_cost"]) / 1e6:>8.2f}' + ''.join(f'{d:>15}' for d in diffs))
    return '\n'.join(lines)


def verdicts(rows: list[dict], source_depth: int) -> list[str]:
    """For every run made from the source: gained or lost against (a), (b) and the source itself (paired)."""
    lines = []
    for r in rows:
        if r['arm'] not in FROM_SOURCE:
            continue
        parts = [f'{"gained" if r[key][0] > 0 else "lost"} {r[key][0]:+.2f} +- {r[key][1]:.2f} against {name}'
                 for key, name in DIFFS.items() if key in r]
        lines.append(f'{LABELS[r["arm"]].format(s=source_depth)} ({len(r["seeds"])} seeds): ' + '; '.join(parts))
    found = {r['arm']: r for r in rows if r['arm'] in ARMS and r['arm'] != 'source'}  # the ways to the deep model
    if len(found) > 1:
        labels = {arm: LABELS[arm].format(s=source_depth) for arm in found}
        best, margins = ranked_margins(found, labels)
        lines.append(f'best at the new cost: {labels[best]} ({"; ".join(margins)})')
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', type=Path, default=CONFIG)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--source-depth', type=int, default=8)
    parser.add_argument('--source-epochs', type=int, default=12)
    parser.add_argument('--target-depth', type=int, default=32)
    parser.add_argument('--meta-epochs', type=int, default=6, help='(b)\'s meta pretraining from scratch')
    parser.add_argument('--incubate-epochs', type=int, default=2)
    parser.add_argument('--finetune-epochs', type=int, default=2)
    parser.add_argument('--train-images', type=int, default=2500, help='training set: the first N images')
    parser.add_argument('--source-width', type=int, help='the source\'s width (default: the config\'s)')
    parser.add_argument('--target-width', type=int, help='the target\'s width: a multiple of the source\'s, which '
                                                         'make_meta widens exactly (default: the config\'s)')
    parser.add_argument('--arms', nargs='+', choices=ARMS, default=list(ARMS),
                        help='the main arms to run (default: all; the source is trained whenever another needs it)')
    parser.add_argument('--no-all', dest='all_blocks', action='store_false', help='skip pretrained-all')
    parser.add_argument('--no-refs', dest='refs', action='store_false', help='skip the references')
    parser.add_argument('--finished-only', action='store_true', help='train nothing: the table of finished runs')
    parser.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'grow_from_pretrained')
    args = parser.parse_args(argv)
    for depth in (args.source_depth, args.target_depth):
        if depth % NUM_MODULES:
            parser.error(f'depth {depth}: the source and the target must split into {NUM_MODULES} modules')
    for width in (args.source_width, args.target_width):
        if width is not None and width % HEAD_DIMS:
            parser.error(f'width {width}: give a multiple of {HEAD_DIMS} (heads of {HEAD_DIMS} channels)')
    if args.target_depth % args.source_depth:
        parser.error(f'--target-depth {args.target_depth}: pretrained-all needs a multiple of --source-depth')
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = {seed: Setting(seed, args.source_depth, args.source_epochs, args.target_depth, args.meta_epochs,
                              args.incubate_epochs, args.finetune_epochs, args.train_images, args.source_width,
                              args.target_width) for seed in args.seeds}
    jobs = plan(args.seeds, args.all_blocks, args.refs, args.arms)
    print(f'{len(jobs)} runs, one at a time; training set {args.train_images} images', flush=True)
    start = time.perf_counter()
    records, progress = [], Progress(len(jobs), noun='run')
    for index, (seed, arm) in enumerate(jobs, 1):
        left = [('run', int(finished(args.out / settings[s].name() / a, a) is None)) for s, a in jobs[index - 1:]]
        print(progress.announce(index, f'{settings[seed].name()} {arm}', left), flush=True)
        started, reused = time.perf_counter(), finished(args.out / settings[seed].name() / arm, arm) is not None
        if (record := run(settings[seed], arm, args.config, args.out, not args.finished_only)) is not None:
            records.append(record)
        progress.done(('run', int(not reused)), time.perf_counter() - started)
    rows = summarize(records)
    table, verdict = format_table(rows, args.source_depth), verdicts(rows, args.source_depth)
    summary = dict(command=' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                   date=time.strftime('%Y-%m-%d'), machine=describe_machine(),
                   config=str(args.config.relative_to(ROOT)), records=records, rows=rows, verdicts=verdict,
                   wall_seconds=time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'results.json').write_text(json.dumps(summary, indent=1) + '\n')
    print(f'\n{table}\n\n' + '\n'.join(verdict) + f'\n\nresults {args.out / "results.json"}')
    return summary


if __name__ == '__main__':
    main()
