"""Module jobs side by side: what incubation's independence buys on one machine, measured.

Two module incubations of a K=2 pipeline run at the same time, one process per core, pinned, with one thread
each; the same two jobs run one after the other; and one E2E job of the same cost (block-epochs) runs on both
cores. The module products of the side-by-side and the sequential runs must be bit-identical (the jobs
share nothing but the meta model); the wall times say what running them side by side gains here, and how
that compares with one job using both cores (which, for tiny models, scales poorly with threads).

    python benchmarks/parallel_modules.py            # about 3 minutes on 2 idle cores

Prints a table and writes ``benchmarks/results/parallel_modules/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'


def train(work_dir: Path, phases: list[str], options: list[str], threads: int, core: int | None = None,
          module: int | None = None) -> subprocess.Popen:
    """``tools/train.py`` of some phases into ``work_dir``, on ``threads`` threads (pinned to ``core``)."""
    command = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(CONFIG), '--phase', *phases,
               '--work-dir', str(work_dir), '--cfg-options', *options]
    if module is not None:
        command[command.index('--work-dir'):command.index('--work-dir')] = ['--module', str(module)]
    if core is not None and shutil.which('taskset'):
        command = ['taskset', '-c', str(core), *command]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    work_dir.mkdir(parents=True, exist_ok=True)
    log = open(work_dir / f'run_{"_".join(phases)}{"" if module is None else module}.log', 'w')
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f'error: {" ".join(process.args)} failed (exit status {process.returncode}); see its log')


def timed(*processes: subprocess.Popen, started: float) -> float:
    wait(*processes)
    return time.perf_counter() - started


def same_products(a: Path, b: Path, modules: int) -> bool:
    for module in range(modules):
        name = f'incubate/module_{module}/module_{module}.pth'
        left = torch.load(a / name, weights_only=True)['state_dict']
        right = torch.load(b / name, weights_only=True)['state_dict']
        if left.keys() != right.keys() or not all(torch.equal(left[k], right[k]) for k in left):
            return False
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--train-images', type=int, default=2000)
    parser.add_argument('--epochs', type=int, default=4, help='epochs of each module job (a multiple of 4: E2E of '
                                                             'the same cost then takes whole epochs)')
    parser.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'parallel_modules')
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)  # results of this script only: every run starts from its own meta model
    options = ['incubation.num_modules=2', f'train_dataloader.dataset.indices={args.train_images}',
               'incubation.meta.train_cfg.max_epochs=1', f'incubation.incubate.train_cfg.max_epochs={args.epochs}',
               'val_dataloader.dataset.indices=500']
    print('meta model (shared)', flush=True)
    wait(train(args.out / 'sequential', ['meta'], options, threads=2))
    shutil.copytree(args.out / 'sequential' / 'meta', args.out / 'side_by_side' / 'meta')

    print('module jobs one after the other, one thread each', flush=True)
    started = time.perf_counter()
    wait(train(args.out / 'sequential', ['incubate'], options, threads=1, core=0, module=0))
    sequential = timed(train(args.out / 'sequential', ['incubate'], options, threads=1, core=0, module=1),
                       started=started)
    print('module jobs side by side, one core each', flush=True)
    started = time.perf_counter()
    side_by_side = timed(*(train(args.out / 'side_by_side', ['incubate'], options, threads=1, core=k, module=k)
                           for k in range(2)), started=started)
    # E2E of the two module jobs' cost: hybrids of 1 + 4 blocks each, the full model 8 blocks
    if args.epochs % 4:
        parser.error(f'--epochs {args.epochs}: give a multiple of 4 (2 hybrids of 5 blocks = 10/8 of E2E epochs)')
    e2e_epochs = 2 * (1 + 4) * args.epochs // 8
    print(f'one E2E job of the same cost ({e2e_epochs} epochs of 8 blocks) on both cores', flush=True)
    started = time.perf_counter()
    e2e = timed(train(args.out / 'e2e', ['e2e'], options + [f'incubation.e2e.train_cfg.max_epochs={e2e_epochs}'],
                      threads=2), started=started)
    equal = same_products(args.out / 'sequential', args.out / 'side_by_side', 2)
    result = dict(train_images=args.train_images, epochs=args.epochs, sequential_seconds=sequential,
                  side_by_side_seconds=side_by_side, e2e_two_cores_seconds=e2e, e2e_epochs=e2e_epochs,
                  products_bit_identical=equal, cores=os.cpu_count(), date=time.strftime('%Y-%m-%d'))
    print(f'\n{"run":<44}{"wall s":>8}\n' + '\n'.join(f'{name:<44}{seconds:>8.1f}' for name, seconds in (
        ('2 module jobs one after the other (1 core)', sequential), ('2 module jobs side by side (1 core each)',
                                                                    side_by_side),
        (f'E2E of the same cost on 2 cores ({e2e_epochs} epochs)', e2e))))
    print(f'side by side / sequential {side_by_side / sequential:.2f}; module products bit-identical: {equal}')
    (args.out / 'results.json').write_text(json.dumps(result, indent=1) + '\n')
    return result


if __name__ == '__main__':
    main()
