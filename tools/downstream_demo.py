"""Downstream demo: the demo's incubated ViT vs. its end-to-end twin as detection / segmentation backbones.

    python tools/downstream_demo.py            # data (if missing) -> 4 trainings -> table

Builds pasted Fashion-MNIST (tools/dataset_converters/make_pasted_fashion_mnist.py) when missing, then trains
the two demo configs of configs/downstream/demo/ (Mask R-CNN + SimpleFPN; UperNet) once from each backbone
checkpoint of ``make demo`` with the same data, schedule and seed, and prints bbox AP, segm AP (mmdet's
CocoMetric) and mIoU (mmseg's IoUMetric) side by side. Each training is a plain MMEngine Runner in
``work_dirs/downstream_demo/<task>_<backbone>/``; its metrics are saved there (``metrics.json``) and reused on
a rerun as long as config, checkpoint and data are unchanged (``--force`` retrains).

It writes only into folders it made: a --work-dir that holds anything but its run folders and its results.json,
or a --data-root that holds files but no data set manifest (one's own COCO set, say), is refused in one line
before anything is written, and so is a numeric argument out of its range (--max-iters 0, --seed -1).
"""
from __future__ import annotations

import os

# With libgomp's default (active) waiting, two OpenMP threads on two cores that another process also uses
# spin-wait for each other: a Mask R-CNN iteration measured 7x slower than with passive waiting (set before
# torch is imported; an explicit OMP_WAIT_POLICY is kept).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from mmengine.config import Config  # noqa: E402

import mmincubation  # noqa: E402,F401  (compatibility fixes and registries)
from mmincubation.checkpoint import write_atomic  # noqa: E402
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT  # noqa: E402
from mmincubation.datasets.pasted_fashion_mnist import (  # noqa: E402
    MANIFEST,
    PastedDataError,
    PasteParams,
    check_output_folder,
    make_pasted_fashion_mnist,
    read_manifest,
)
from mmincubation.engine.downstream import resolve_settings  # noqa: E402
from mmincubation.engine.runner.cli import exit_on_bad_input  # noqa: E402
from mmincubation.engine.runner.fit_checks import check_pretrained_backbone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / 'configs' / 'downstream' / 'demo'
CONFIGS = {
    'det': DEMO_DIR / 'mask-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-fashion-mnist.py',
    'seg': DEMO_DIR / 'upernet_vit-tiny-p4-incubated_pasted-fashion-mnist.py',
}
#: metric name in the table -> (task, key in the evaluator's results, factor to percent)
METRICS = {'bbox AP': ('det', 'coco/bbox_mAP', 100.), 'segm AP': ('det', 'coco/segm_mAP', 100.),
           'mIoU': ('seg', 'mIoU', 1.)}
UPSTREAM = 'work_dirs/incubate_demo_fashion_mnist'
BACKBONES = {'incubated': f'{UPSTREAM}/finetune/finetuned.pth', 'e2e': f'{UPSTREAM}/e2e/e2e.pth'}
LABELS = {'incubated': 'Deep Incubation', 'e2e': 'E2E'}
#: What the demo writes into --work-dir: one folder per run (MMEngine's logs and checkpoints, metrics.json) and
#: the summary of all runs.
RUN_DIRS = frozenset(f'{task}_{backbone}' for task in CONFIGS for backbone in BACKBONES)
RESULTS = 'results.json'
SUMMARY_KEYS = frozenset({'title', 'table', 'results', 'wall_seconds'})
#: The range of each numeric argument (None: not given).
RANGES = {'num_train': ('>= 1', lambda v: v >= 1), 'num_val': ('>= 1', lambda v: v >= 1),
          'seed': ('>= 0', lambda v: v >= 0), 'max_iters': ('>= 1', lambda v: v is None or v >= 1),
          'train_seed': ('>= 0', lambda v: v is None or v >= 0)}


# ----------------------------------------------------------------------------------------------- config edits

def set_max_iters(cfg: Config, max_iters: int) -> Config:
    """Rescale the config's iteration schedule to ``max_iters``: loop, validation and checkpoint at the end,
    every LR scheduler's ``begin``/``end`` in proportion (one that shrinks to nothing, e.g. a short warm-up, is
    dropped)."""
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    schedulers = []
    for scheduler in cfg.param_scheduler:
        begin = round(scheduler.get('begin', 0) * max_iters / old)
        end = round(min(scheduler.get('end', old), old) * max_iters / old)
        if end > begin:
            scheduler.update(begin=begin, end=end)
            schedulers.append(scheduler)
    cfg.param_scheduler = schedulers
    return cfg


def demo_config(task: str, checkpoint: str | os.PathLike, work_dir: str | os.PathLike,
                data_root: str | os.PathLike | None = None, max_iters: int | None = None,
                log_level: str | None = None, seed: int | None = None) -> Config:
    """The demo config of ``task`` ('det' or 'seg') for one backbone checkpoint, its settings filled in
    (:func:`~mmincubation.engine.downstream.resolve_settings`), ready for ``Runner.from_cfg``."""
    cfg = Config.fromfile(str(CONFIGS[task]))
    if log_level is not None:
        cfg.log_level = log_level
    cfg.checkpoint = str(checkpoint)
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    if data_root is not None:
        cfg.data_root = str(data_root).rstrip('/') + '/'
    resolve_settings(cfg)
    if max_iters is not None:
        set_max_iters(cfg, max_iters)
    if seed is not None:
        cfg.randomness = dict(seed=seed)
    # Unique per run, so that several Runners can live in one process (logger, message hub, visualizer); the
    # Runner appends a timestamp.
    name = f'{Path(work_dir).name}_{os.getpid()}_{time.monotonic_ns()}'
    cfg.experiment_name = name
    cfg.visualizer.name = f'visualizer_{name}'
    return cfg


# ----------------------------------------------------------------------------------------------- one run

def _sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _signature(cfg: Config, checkpoint: str | os.PathLike) -> dict:
    data_root = cfg.train_dataloader.dataset.data_root
    stable = copy.deepcopy(cfg)  # without what names the run or sets its verbosity
    for key in ('experiment_name', 'work_dir', 'log_level'):
        stable.pop(key, None)
    stable.visualizer.pop('name', None)
    text = stable.pretty_text
    return dict(config_sha256=hashlib.sha256(text.encode()).hexdigest(), checkpoint=str(checkpoint),
                checkpoint_sha256=_sha256(checkpoint), data=(read_manifest(data_root) or {}).get('params'))


def run_one(cfg: Config, force: bool = False, hooks: Sequence = ()) -> dict:
    """Train ``cfg`` (validation once, at the end) and return its record (metrics, timings).

    The record is written to ``<work_dir>/metrics.json`` and reused when config, checkpoint and data match.
    ``hooks``: extra hook instances for the Runner.
    """
    from mmengine.runner import Runner
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    signature = _signature(cfg, checkpoint)
    record_path = Path(cfg.work_dir) / 'metrics.json'
    if record_path.is_file() and not force:
        record = json.loads(record_path.read_text())
        if record.get('signature') == signature:
            record['cached'] = True
            return record
    start = time.perf_counter()
    check_pretrained_backbone(cfg)
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    wall = time.perf_counter() - start
    hub = runner.message_hub
    metrics = {key[len('val/'):]: float(buffer.current()) for key, buffer in hub.log_scalars.items()
               if key.startswith('val/') and key not in ('val/time', 'val/data_time') and len(buffer.data[0])}
    iter_times = hub.log_scalars['train/time'].data[0] if 'train/time' in hub.log_scalars else []
    record = dict(signature=signature, metrics=metrics, wall_seconds=wall, max_iters=cfg.train_cfg.max_iters,
                  batch_size=cfg.train_dataloader.batch_size,
                  seconds_per_iter=float(sum(iter_times) / len(iter_times)) if len(iter_times) else None)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=record_path.parent, prefix='.metrics.')
    with os.fdopen(fd, 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, record_path)
    record['cached'] = False
    return record


# ----------------------------------------------------------------------------------------------- output folders

def _first_foreign(folder: Path, ours: Callable[[Path], bool]) -> str | None:
    """The first file (or link) under ``folder`` whose path relative to it ``ours`` does not accept; None if none."""
    for path in sorted(folder.rglob('*')) if folder.is_dir() else ():
        if (not path.is_dir() or path.is_symlink()) and not ours(path.relative_to(folder)):
            return path.relative_to(folder).as_posix()
    return None


def _is_summary(path: Path) -> bool:
    """Whether ``path`` is a results.json the demo wrote."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.keys() == SUMMARY_KEYS


def check_output_folders(work_dir: Path, data_root: Path, source_root: str) -> None:
    """Refuse a ``work_dir`` that holds other files than the demo's runs and summary, and a ``data_root`` that is
    not (nor may become) a pasted Fashion-MNIST data set: one the data builder refuses, or a folder of files
    without its manifest, which the builder would replace.

    Raises:
        SystemExit: one line naming the folder and its first file that is not the demo's.
    """
    if work_dir.exists() and not work_dir.is_dir():
        raise SystemExit(f'error: --work-dir {work_dir} is a file, expected a folder')
    first = _first_foreign(work_dir, lambda rel: rel.parts[0] in RUN_DIRS and len(rel.parts) > 1
                           or rel.as_posix() == RESULTS and _is_summary(work_dir / rel))
    if first is not None:
        raise SystemExit(f'error: --work-dir {work_dir} holds files the downstream demo did not write (first: '
                         f'{first}): nothing was written; choose a new or empty folder')
    try:
        check_output_folder(data_root, source_root)
    except PastedDataError as error:
        raise SystemExit(f'error: {error}') from error
    first = _first_foreign(data_root, lambda rel: False) if read_manifest(data_root) is None else None
    if first is not None:
        raise SystemExit(f'error: --data-root {data_root} holds files but no {MANIFEST} (first: {first}): it is no '
                         'pasted Fashion-MNIST data set made here, and building one would delete them; choose '
                         'another folder or empty it')


# ----------------------------------------------------------------------------------------------- the table

def _upstream_top1(checkpoint: str) -> float | None:
    """Fashion-MNIST test accuracy of the upstream phase that wrote ``checkpoint`` (its phase_record.json)."""
    try:
        record = json.loads((Path(checkpoint).parent / 'phase_record.json').read_text())
        return float(record['test_metrics']['accuracy/top1'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def format_table(results: dict, backbones: dict) -> str:
    """``results[backbone][task]`` records -> a text table, one row per backbone."""
    def cell(value, width, fmt='.1f'):
        return f'{value:{width}{fmt}}' if isinstance(value, (int, float)) else f'{"-":>{width}}'

    header = f'{"backbone":<16} {"upstream top-1":>14} {"bbox AP":>8} {"segm AP":>8} {"mIoU":>6}  checkpoint'
    lines = [header, '-' * len(header)]
    for backbone, checkpoint in backbones.items():
        row = [f'{LABELS.get(backbone, backbone):<16}', cell(_upstream_top1(checkpoint), 14)]
        for name, (task, key, factor) in METRICS.items():
            value = results.get(backbone, {}).get(task, {}).get('metrics', {}).get(key)
            row.append(cell(value * factor if value is not None else None, len(name) if len(name) > 6 else 6))
        lines.append(' '.join(row) + f'  {checkpoint}')
    return '\n'.join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = PasteParams()
    parser = argparse.ArgumentParser(description='Incubated vs. E2E backbones on pasted Fashion-MNIST')
    parser.add_argument('--data-root', default='data/pasted_fashion_mnist')
    parser.add_argument('--source-root', default=DEBIAN_ROOT, help='Fashion-MNIST IDX files (.gz)')
    parser.add_argument('--num-train', type=int, default=defaults.num_train)
    parser.add_argument('--num-val', type=int, default=defaults.num_val)
    parser.add_argument('--seed', type=int, default=defaults.seed, help='seed of the data set')
    parser.add_argument('--work-dir', default='work_dirs/downstream_demo')
    parser.add_argument('--incubated', default=BACKBONES['incubated'], help='Deep Incubation checkpoint')
    parser.add_argument('--e2e', default=BACKBONES['e2e'], help='end-to-end baseline checkpoint')
    parser.add_argument('--tasks', nargs='+', choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument('--max-iters', type=int, help="override the configs' training iterations")
    parser.add_argument('--train-seed', type=int, help="override the configs' training seed (randomness.seed)")
    parser.add_argument('--force', action='store_true', help='retrain even when a matching metrics.json exists')
    parser.add_argument('--quiet', action='store_true', help="only warnings from the runners (no config dumps, "
                        "no training log); the per-run summary and the table are still printed")
    parser.add_argument('--force-data', action='store_true',
                        help='rebuild --data-root when it holds a data set of other parameters')
    args = parser.parse_args(argv)
    for name, (needs, accepts) in RANGES.items():
        if not accepts(getattr(args, name)):
            parser.error(f'argument --{name.replace("_", "-")}: must be {needs}, got {getattr(args, name)}')
    return args


@exit_on_bad_input
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    backbones = {'incubated': args.incubated, 'e2e': args.e2e}
    missing = [path for path in backbones.values() if not Path(path).is_file()]
    if missing:
        raise SystemExit(f'error: missing backbone checkpoint(s) {missing}: run `make demo` first')
    check_output_folders(Path(args.work_dir), Path(args.data_root), args.source_root)
    configs = {(task, backbone): demo_config(task, checkpoint, Path(args.work_dir) / f'{task}_{backbone}',
                                             data_root=args.data_root, max_iters=args.max_iters,
                                             log_level='WARNING' if args.quiet else None, seed=args.train_seed)
               for task in args.tasks for backbone, checkpoint in backbones.items()}
    for cfg in configs.values():  # a checkpoint that does not fit is refused before minutes of data and training
        check_pretrained_backbone(cfg)
    canvas = Config.fromfile(str(CONFIGS['det'])).image_size
    try:
        params = PasteParams(num_train=args.num_train, num_val=args.num_val, canvas=canvas, seed=args.seed)
    except ValueError as error:
        raise SystemExit(f'error: {error}') from error
    try:
        built = make_pasted_fashion_mnist(args.data_root, params, source_root=args.source_root, force=args.force_data)
    except (PastedDataError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f'error: {error}') from error
    if built:
        print(f'wrote {args.data_root}', flush=True)
    data_seconds = time.perf_counter() - start

    results: dict = {}
    for task in args.tasks:
        for backbone, checkpoint in backbones.items():
            cfg = configs[task, backbone]
            work_dir = cfg.work_dir
            print(f'== {task} / {LABELS[backbone]}: {checkpoint} -> {work_dir}', flush=True)
            record = run_one(cfg, force=args.force)
            results.setdefault(backbone, {})[task] = record
            spi = record.get('seconds_per_iter')
            shown = {key: round(value, 4) for key, value in record['metrics'].items()
                     if key in [k for t, k, _ in METRICS.values() if t == task]}
            print(f'   {"cached" if record["cached"] else "trained"}: {record["max_iters"]} iterations x '
                  f'{record["batch_size"]} images, {record["wall_seconds"]:.0f} s'
                  + (f' ({spi:.2f} s/iter)' if spi else '') + f': {shown}', flush=True)

    total = time.perf_counter() - start
    manifest = read_manifest(args.data_root) or {}
    counts = manifest.get('counts', {})
    title = (f'Downstream demo on pasted Fashion-MNIST ({counts.get("training", {}).get("images")} train / '
             f'{counts.get("validation", {}).get("images")} val canvases of {canvas} px); same config, schedule '
             'and seed for both backbones. AP: COCO mAP@[.5:.95] (%), mIoU over background + 10 classes (%).')
    table = format_table(results, backbones)
    trained = sum(r['wall_seconds'] for by_task in results.values() for r in by_task.values() if not r['cached'])
    print(f'\n{title}\n{table}\n\nwall time {total:.0f} s (data {data_seconds:.0f} s, trainings run now '
          f'{trained:.0f} s)')
    summary = dict(title=title, table=table, results=results, wall_seconds=total)
    text = json.dumps(summary, indent=1) + '\n'
    write_atomic(Path(args.work_dir) / RESULTS, lambda f: f.write(text.encode()))
    return summary


if __name__ == '__main__':
    main()
