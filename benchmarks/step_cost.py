"""Step cost of module incubation against end-to-end training, measured side by side in one run.

For every phase network of a pipeline config (meta model, the K hybrids, the full model) this times
MMEngine's ``train_step`` at the same batch on synthetic images, records peak memory, and compares
each hybrid with the full model: measured time ratio next to the ideal ratio (blocks in the hybrid /
blocks in the full model). It also times module 1's phase through a real MMEngine ``Runner`` built from
our phase config, with and without mmincubation's hooks, to show what our runner adds per iteration.

    python benchmarks/step_cost.py configs/incubate_demo_fashion_mnist.py --batch 128
    python benchmarks/step_cost.py configs/incubate_vit_b.py --batch 64 --device cuda --amp   # on a GPU

Prints a table and writes JSON and a PNG (measured vs ideal ratios) under ``benchmarks/results/``. Each
network runs in its own subprocess, so the CPU peak (max RSS) of one does not hide another's.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import DATASETS, DefaultScope

import mmincubation  # noqa: F401
from mmincubation.backbones import stage_depths_of
from mmincubation.checkpoint import check_config_file
from mmincubation.complexity import input_shape
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.cli import exit_on_bad_input
from mmincubation.engine.runner.incubation_runner import phase_hooks
from mmincubation.engine.runner.phase_config import as_fp32
from mmincubation.engine.runner.progress import Progress
from mmincubation.phases import Phase

RESULTS = Path(__file__).parent / 'results'


def synthetic_batch(cfg: Config, batch: int, size: list[int] | None = None) -> dict:
    """A batch in the form mmpretrain's data preprocessor expects: uint8 images and labels, of the config's input
    shape (:func:`mmincubation.complexity.input_shape`; ``size``, H [W], for a backbone without ``img_size``)."""
    from mmpretrain.structures import DataSample
    shape = input_shape(cfg, size)
    classes = cfg.model.head.num_classes
    inputs = [torch.randint(0, 256, shape, dtype=torch.uint8) for _ in range(batch)]
    samples = [DataSample().set_gt_label(i % classes) for i in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def time_train_step(phase_cfg: Config, batch: int, iters: int, warmup: int, device: str,
                    size: list[int] | None = None) -> dict:
    """Median seconds per ``train_step`` and peak memory of one phase network."""
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    model_cfg = phase_cfg.model.copy()
    if phase_cfg.get('data_preprocessor') is not None:  # as MMEngine's Runner gives the model its preprocessor
        model_cfg.setdefault('data_preprocessor', phase_cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg).to(device)
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, phase_cfg.optim_wrapper)
    data = synthetic_batch(phase_cfg, batch, size)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + iters):
        start = time.perf_counter()
        model.train_step(data, optim_wrapper)
        if device == 'cuda':
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = (torch.cuda.max_memory_allocated() if device == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return dict(seconds_per_iter=statistics.median(times), peak_bytes=peak, trainable_params=trainable,
                blocks=sum(stage_depths_of(phase_cfg.model.backbone)))


@DATASETS.register_module(force=True)
class SyntheticImages(torch.utils.data.Dataset):
    """``length`` copies of one random image, so data loading costs next to nothing."""

    def __init__(self, length: int, shape: list[int]) -> None:
        from mmpretrain.structures import DataSample
        self.length = length
        self.image = torch.randint(0, 256, tuple(shape), dtype=torch.uint8)
        self.sample = DataSample().set_gt_label(0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.image, data_samples=self.sample)


def time_runner(phase_cfg: Config, batch: int, iters: int, hooks: list[dict], size: list[int] | None = None) -> float:
    """Seconds per iteration of a real MMEngine Runner on the phase config (synthetic data)."""
    from mmengine.runner import Runner

    cfg = phase_cfg.copy()
    dataset = dict(type='SyntheticImages', length=batch * iters, shape=list(input_shape(phase_cfg, size)))
    cfg.train_dataloader = dict(dataset=dataset, batch_size=batch, num_workers=0,
                                sampler=dict(type='DefaultSampler', shuffle=False),
                                collate_fn=dict(type='default_collate'))
    cfg.train_cfg = dict(by_epoch=False, max_iters=iters)
    cfg.param_scheduler = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks = dict(checkpoint=None, logger=dict(type='LoggerHook', interval=iters))
    cfg.load_from, cfg.resume = None, False
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + hooks
    runner = Runner.from_cfg(cfg)
    runner.train()
    # The runner's own per-iteration timer; the first iterations are dominated by start-up.
    return float(runner.message_hub.get_scalar('train/time').mean(iters // 2))


def measure(args: argparse.Namespace, phase: str, module: int | None) -> dict:
    cfg = Config.fromfile(args.config)
    cfg.work_dir = str(RESULTS / 'work_dir')
    if 'incubation' in cfg:  # timing needs no meta model: scratch modules cost the same per step as grown ones
        cfg.incubation.module_init = 'scratch'
    phase_cfg = phase_recipe(cfg, phase, module)
    if args.amp:  # MMEngine's AmpOptimWrapper needs a GPU
        phase_cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    else:  # FP32, the bf16 GPU configs included
        as_fp32(phase_cfg.optim_wrapper)
    result = time_train_step(phase_cfg, args.batch, args.iters, args.warmup, args.device, args.shape)
    if args.runner and phase == 'incubate' and module == 1:
        result['runner_seconds_per_iter'] = time_runner(phase_cfg, args.batch, args.iters,
                                                        hooks=phase_hooks(build_layout(cfg), phase, module),
                                                        size=args.shape)
        result['runner_without_our_hooks_seconds_per_iter'] = time_runner(phase_cfg, args.batch, args.iters, hooks=[],
                                                                          size=args.shape)
    return result


def plot(rows: dict, title: str, out_file: Path) -> Path:
    """Measured step time of every network relative to the full model's, next to the ideal (block share)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    positions = range(len(names))
    ax.bar([i - 0.2 for i in positions], [rows[n]['time_ratio'] for n in names], width=0.4, label='measured')
    ax.bar([i + 0.2 for i in positions], [rows[n]['ideal_ratio'] for n in names], width=0.4, label='ideal (blocks)')
    ax.set_xticks(list(positions), [n.replace('incubate_', '') for n in names], rotation=20)
    ax.set(ylabel='s/iter relative to E2E', title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)
    return out_file


def _count(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f'{value} is below {minimum}')
        return value
    parse.__name__ = 'int'  # argparse names the type in its message
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', default='configs/incubate_demo_fashion_mnist.py')
    parser.add_argument('--batch', type=_count(1), default=128)
    parser.add_argument('--iters', type=_count(1), default=20)
    parser.add_argument('--warmup', type=_count(0), default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast (AmpOptimWrapper, CUDA only)')
    parser.add_argument('--shape', type=_count(1), nargs='+', metavar='H [W]',
                        help='input image size (default: model.backbone.img_size; ConvNeXt has none)')
    parser.add_argument('--runner', action='store_true', help='also time module 1 through MMEngine Runners')
    parser.add_argument('--one', nargs=2, help=argparse.SUPPRESS)  # child process: PHASE MODULE
    args = parser.parse_args(argv)
    if args.device not in ('cpu', 'cuda') and not args.device.startswith('cuda:'):
        parser.error(f'--device {args.device}: expected cpu, cuda or cuda:N')
    if args.device != 'cpu' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch sees no CUDA device on this machine (use --device cpu)')
    if args.amp and args.device == 'cpu':
        parser.error('--amp needs a CUDA device (MMEngine\'s AmpOptimWrapper); drop it or use --device cuda')
    return args


def _measure_in_child(args: argparse.Namespace, phase: str, module: int | None) -> dict:
    """``measure`` in a fresh process; its failure is reported with its own error output."""
    name = phase if module is None else f'{phase} module {module}'
    child = [sys.executable, __file__, args.config, '--one', phase, '-' if module is None else str(module),
             '--batch', str(args.batch), '--iters', str(args.iters), '--warmup', str(args.warmup),
             '--device', args.device] + (['--amp'] if args.amp else []) + (['--runner'] if args.runner else []) \
        + (['--shape', *map(str, args.shape)] if args.shape else [])
    result = subprocess.run(child, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        sys.stderr.write(result.stderr)
        last = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), 'no error output')
        raise SystemExit(f'error: measuring the {name} network failed (exit status {result.returncode}): {last}')
    return json.loads(lines[-1])


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        phase, module = args.one
        print(json.dumps(measure(args, phase, None if module == '-' else int(module))))
        return

    layout = build_layout(Config.fromfile(check_config_file(args.config)))
    jobs = [('meta', None)] + [('incubate', k) for k in range(layout.num_modules)] + [('e2e', None)]
    rows, progress = {}, Progress(len(jobs), noun='network')
    for index, (phase, module) in enumerate(jobs, 1):  # each in a fresh process: independent peak memory
        print(progress.announce(index, str(Phase(phase, module)), [('network', 1)] * (len(jobs) - index + 1)),
              file=sys.stderr, flush=True)
        started = time.perf_counter()
        rows[phase if module is None else f'incubate_module_{module}'] = _measure_in_child(args, phase, module)
        progress.done(('network', 1), time.perf_counter() - started)

    full = rows['e2e']
    title = (f'{Path(args.config).stem}: batch {args.batch}, {args.device}, '
             f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads')
    print(f'{title}, median of {args.iters} steps')
    print(f'{"network":<20}{"blocks":>7}{"s/iter":>9}{"vs full":>9}{"ideal":>7}{"peak MiB":>10}{"trainable":>12}')
    for name, row in rows.items():
        row['time_ratio'] = row['seconds_per_iter'] / full['seconds_per_iter']
        row['ideal_ratio'] = row['blocks'] / full['blocks']
        print(f'{name:<20}{row["blocks"]:>7}{row["seconds_per_iter"]:>9.4f}{row["time_ratio"]:>9.2f}'
              f'{row["ideal_ratio"]:>7.2f}{row["peak_bytes"] / 2**20:>10.0f}{row["trainable_params"]:>12,}')
    runner_row = rows.get('incubate_module_1', {})
    if 'runner_seconds_per_iter' in runner_row:
        ours, plain = runner_row['runner_seconds_per_iter'], runner_row['runner_without_our_hooks_seconds_per_iter']
        print(f'module 1 through MMEngine Runner: {ours:.4f} s/iter with our hooks, {plain:.4f} without '
              f'({(ours / plain - 1) * 100:+.1f} %); bare train_step {runner_row["seconds_per_iter"]:.4f}')
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f'step_cost_{Path(args.config).stem}_{args.device}.json'
    out.write_text(json.dumps(dict(config=args.config, batch=args.batch, device=args.device,
                                   date=time.strftime('%Y-%m-%d'), rows=rows), indent=1))
    print(f'wrote {out}\nplot {plot(rows, title, out.with_suffix(".png"))}')


if __name__ == '__main__':
    main()
