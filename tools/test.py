"""Evaluate a checkpoint with a config's test set.

For an incubation pipeline config the full model is evaluated (``--phase meta`` for a meta-model
checkpoint); any plain mmpretrain / mmdet / mmseg config works as with their own tools/test.py.
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction
from mmengine.runner import Runner

import mmincubation  # noqa: F401
from mmincubation.compat import init_cpu_distributed
from mmincubation.engine.runner import phase_config
from mmincubation.engine.runner.cli import load_config


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


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args, 'test')
    if 'incubation' in cfg:
        work_dir = cfg.work_dir
        cfg = phase_config(cfg, args.phase)
        cfg.custom_hooks = [h for h in cfg.custom_hooks if not str(h['type']).startswith('mmincubation.')]
        cfg.work_dir = work_dir
    cfg.launcher = args.launcher
    cfg.load_from, cfg.resume = args.checkpoint, False
    init_cpu_distributed(cfg)
    return Runner.from_cfg(cfg).test()


if __name__ == '__main__':
    main()
