"""Evaluate a checkpoint with a config's test set.

For an incubation pipeline config the full model is evaluated (``--phase meta`` for a meta-model
checkpoint); any plain mmpretrain / mmdet / mmseg config works as with their own tools/test.py.
The checkpoint must fit the model exactly: a single module, a hybrid, a meta model evaluated as the
full model (or the reverse), or weights of another width or depth are refused before anything runs,
with the file and the difference named (MMEngine itself only warns and scores random weights).
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction
from mmengine.runner import Runner

import mmincubation  # noqa: F401
from mmincubation.checkpoint import load_fitting
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.cli import exit_on_bad_input, load_config
from mmincubation.engine.runner.fit_checks import full_model_shapes
from mmincubation.launcher import setup_launcher


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
