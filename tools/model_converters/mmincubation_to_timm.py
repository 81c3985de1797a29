"""Export a classifier checkpoint to timm: a product of the pipeline or any mmpretrain ViT / Swin classifier.

    python tools/model_converters/mmincubation_to_timm.py configs/incubate_demo_fashion_mnist.py \\
        work_dirs/incubate_demo_fashion_mnist/finetune/finetuned.pth vit_demo.safetensors

CONFIG is the config the checkpoint was trained with (a pipeline config: its full model; or a plain
mmpretrain config); the checkpoint must fit it exactly. Writes OUT, a timm state dict (``.safetensors``, with
the tag, ``dataset_meta`` and the timm spec as metadata, or ``.pth``, a plain ``torch.save`` dict), and
``OUT.json`` (the ``timm.create_model`` name and kwargs), then prints the Python lines that build the timm
model and load OUT strictly. Existing outputs are refused unless --force. What timm cannot express (another
backbone, pooling or Swin window layout) stops with one line naming the config field.
"""
from __future__ import annotations

import argparse

from mmengine.config import Config, DictAction

import mmincubation  # noqa: F401  (compatibility fixes and registries)
from mmincubation.checkpoint import check_config_file
from mmincubation.engine.runner.cli import exit_on_bad_input
from mmincubation.export import export_timm_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export an mmpretrain ViT / Swin classifier checkpoint to timm')
    parser.add_argument('config', help='the config of the checkpoint (pipeline or mmpretrain config)')
    parser.add_argument('checkpoint', help='classifier checkpoint (finetuned.pth, e2e.pth, assembled.pth, ...)')
    parser.add_argument('out', help='output timm state dict: NAME.safetensors or NAME.pth (and NAME.*.json)')
    parser.add_argument('--force', action='store_true', help='replace existing outputs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_config_file(args.config)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    out, spec_path, spec = export_timm_file(cfg, args.checkpoint, args.out, force=args.force, inputs=[args.config])
    print(f"exported {args.checkpoint} into {out} (timm's {spec.model_name} architecture) and {spec_path}; in timm:")
    print(spec.python(str(out)))


if __name__ == '__main__':
    main()
