"""Print the parameters and FLOPs of every phase's network of a pipeline, from its config alone (no training).

    python tools/analysis_tools/phase_complexity.py configs/incubate_demo_fashion_mnist.py
    python tools/analysis_tools/phase_complexity.py configs/incubate_vit_b.py --shape 384

One row per phase: the meta model, each module's hybrid (its trainable parameters are the module's), the full
model of the assembly, fine-tune and E2E phases, each built from its phase recipe as the pipeline builds it
(mmincubation.complexity); FLOPs are MMEngine's multiply-adds of one image, also relative to the full model.
The input is the backbone's in_channels and img_size (--shape H [W] sets the size).
"""
from __future__ import annotations

import argparse
import logging

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

import mmincubation  # noqa: F401
from mmincubation.checkpoint import check_config_file
from mmincubation.complexity import format_complexity, input_shape, phase_complexity
from mmincubation.engine.runner.cli import exit_on_bad_input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the whole-pipeline incubation config')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input image size, H [W] (default: model.backbone.img_size)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--verbose', action='store_true',
                        help="show MMEngine's warnings of the count (ops it does not count, modules never called)")
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(str(check_config_file(args.config)))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        shape = input_shape(cfg, args.shape)
    except ValueError as error:
        raise SystemExit(f'error: {error}') from error
    if not args.verbose:  # each network's count warns of the same uncounted ops (additions, GELU) and unused losses
        MMLogger.get_current_instance().setLevel(logging.ERROR)
    for line in format_complexity(phase_complexity(cfg, shape[1:]), shape):
        print(line)


if __name__ == '__main__':
    main()
