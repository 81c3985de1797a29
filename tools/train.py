"""Train from a config: a whole Deep Incubation pipeline, one of its phases, or any plain
mmpretrain / mmdet / mmseg config.

    python tools/train.py configs/incubate_vit_b.py                      # meta -> incubate x K -> assemble -> finetune
    python tools/train.py configs/incubate_vit_b.py --phase incubate --module 2   # one module, one machine
    python tools/train.py configs/incubate_vit_b.py --phase e2e          # the end-to-end baseline
"""
from __future__ import annotations

import os

# libgomp's default (active) waiting makes OpenMP threads spin for each other; on CPUs shared with other
# processes that costs more than it saves (measured in docs/benchmarks.md, "CPU threads"). libgomp reads the variable
# when torch is imported, so it is set first; an explicit OMP_WAIT_POLICY is kept.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmincubation  # noqa: E402,F401  (compatibility fixes and registries)
from mmincubation.engine.runner import PHASES  # noqa: E402
from mmincubation.engine.runner.cli import exit_on_bad_input, merge_config_args  # noqa: E402
from mmincubation.engine.runner.fit_checks import check_pretrained_backbone  # noqa: E402
from mmincubation.engine.runner.phase_config import drop_amp_settings_of_fp32  # noqa: E402
from mmincubation.engine.runner.run_settings import check_pipeline_run_settings  # noqa: E402
from mmincubation.launcher import setup_launcher  # noqa: E402
from mmincubation.phases import DEFAULT_METHODS, phases_of  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model (Deep Incubation pipelines included)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: work_dirs/<config name>)')
    parser.add_argument('--phase', nargs='+', choices=PHASES + ('all', ),
                        help='incubation phases to run (default: meta incubate assemble finetune; '
                             '"all" adds the e2e baseline)')
    parser.add_argument('--module', type=int, nargs='+', help='incubate only these module indices')
    parser.add_argument('--retrain', nargs='+', choices=PHASES,
                        help='set these phases\' runs and products aside (in <work dir>/replaced/), with every '
                             'phase made from them, and train them again')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume a plain config from this checkpoint, or the latest one in work_dir '
                             '(incubation phases always resume when interrupted; a PATH is refused for them)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument('--no-validate', action='store_true', help='skip evaluation during training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale lr by the actual batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. incubation.meta.train_cfg.max_epochs=10')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config, as mmpretrain's tools/train.py does."""
    merge_config_args(cfg, args, keep_work_dir=True)
    cfg.launcher = args.launcher
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    drop_amp_settings_of_fp32(cfg.get('optim_wrapper'))
    if args.no_validate:
        for key in ('val_cfg', 'val_dataloader', 'val_evaluator'):
            cfg[key] = None
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if 'incubation' in cfg:
        # Our configs name it themselves (configs/_base_/incubation_runner.py); a user's pipeline config may not.
        cfg.runner_type = 'mmincubation.IncubationRunner'
        check_pipeline_run_settings(cfg)
        if args.phase:
            methods = cfg.incubation.get('methods', DEFAULT_METHODS)
            cfg.incubation.phases = list(phases_of(methods)) if 'all' in args.phase else args.phase
        if args.module is not None:
            cfg.incubation.modules = args.module
        if args.retrain:
            cfg.incubation.retrain = args.retrain
    elif args.phase or args.module is not None or args.retrain:
        raise SystemExit(f'{args.config} has no `incubation` section: --phase/--module/--retrain do not apply')
    return cfg


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(args.config), args)
    setup_launcher(cfg)
    if 'runner_type' not in cfg:
        check_pretrained_backbone(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
