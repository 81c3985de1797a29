"""Evaluate a checkpoint with a config's test set.

For an incubation pipeline config the full model is evaluated (``--phase meta`` for a meta-model
checkpoint); any plain mmpretrain / mmdet / mmseg config works as with their own tools/test.py.
The checkpoint must fit the model exactly: a single module, a hybrid, a meta model evaluated as the
full model (or the reverse), or weights of another width or depth are refused before anything runs,
with the file and the difference named (MMEngine itself only warns and scores random weights).
"""
from __future__ import annotations

import os

# OpenMP threads that busy-wait between parallel regions slow the CPU down when other processes share it;
# libgomp reads the policy when torch is imported, so it is set first (an explicit value is kept).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402

from mmengine.config import DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmincubation  # noqa: F401, E402
from mmincubation.checkpoint import load_fitting  # noqa: E402
from mmincubation.engine.runner import build_layout, phase_recipe  # noqa: E402
from mmincubation.engine.runner.cli import exit_on_bad_input, load_config  # noqa: E402
from mmincubation.engine.runner.fit_checks import full_model_shapes  # noqa: E402
from mmincubation.launcher import setup_launcher  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--phase', choices=['meta', 'finetune'], default='finetune',
                        help='for incubation configs: which model the checkpoint holds (default: full model)')
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args, 'test')
    num_modules = None
    if 'incubation' in cfg:
        num_modules = build_layout(cfg).num_modules
        cfg = phase_recipe(cfg, args.phase)
    load_fitting(args.checkpoint, full_model_shapes(cfg), holds='meta' if args.phase == 'meta' else 'full',
                 num_modules=num_modules)
    cfg.launcher = args.launcher
    cfg.load_from, cfg.resume = args.checkpoint, False
    setup_launcher(cfg)
    return Runner.from_cfg(cfg).test()


if __name__ == '__main__':
    main()
