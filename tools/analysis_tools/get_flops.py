"""Print MMEngine's parameter and FLOP count of a config's model (a pipeline's: the full model), layer by layer.

    python tools/analysis_tools/get_flops.py configs/incubate_demo_fashion_mnist.py
    python tools/analysis_tools/get_flops.py configs/incubate_vit_b.py --shape 384

mmpretrain's tools/analysis_tools/get_flops.py (1.2.0) feeds 3-channel images whatever the model takes, so it
fails on the grey demo ('expected input[1, 3, 28, 28] to have 1 channels, but got 3 channels instead'). This one
reads the input from the config, the backbone's in_channels and img_size (--shape H [W] sets the size), and
counts the whole classifier (backbone, neck and head; mmpretrain's counts backbone and neck). Every phase's
network: phase_complexity.py.
"""
from __future__ import annotations

import argparse

from mmengine.analysis import get_model_complexity_info

import mmincubation  # noqa: F401
from mmincubation.complexity import add_input_arguments, build_model, config_and_shape
from mmincubation.engine.runner.cli import exit_on_bad_input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_arguments(parser, 'config file path')
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, shape = config_and_shape(args)
    info = get_model_complexity_info(build_model(cfg), input_shape=shape, show_arch=False)
    print(info['out_table'])
    print(f'\ninput shape: {shape}\nFLOPs: {info["flops_str"]} ({info["flops"]} multiply-adds)\n'
          f'params: {info["params_str"]} ({info["params"]})\nactivations: {info["activations_str"]}')


if __name__ == '__main__':
    main()
