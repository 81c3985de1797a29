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

from mmengine.logging import MMLogger

import mmincubation  # noqa: F401
from mmincubation.complexity import add_input_arguments, config_and_shape, format_complexity, phase_complexity
from mmincubation.engine.runner.cli import exit_on_bad_input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_arguments(parser, 'the whole-pipeline incubation config')
    parser.add_argument('--verbose', action='store_true',
                        help="show MMEngine's warnings of the count (ops it does not count, modules never called)")
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, shape = config_and_shape(args)
    if not args.verbose:  # each network's count warns of the same uncounted ops (additions, GELU) and unused losses
        MMLogger.get_current_instance().setLevel(logging.ERROR)
    for line in format_complexity(phase_complexity(cfg, shape[1:]), shape):
        print(line)


if __name__ == '__main__':
    main()
