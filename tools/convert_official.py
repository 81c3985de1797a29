"""Convert an official Deep Incubation checkpoint (LeapLabTHU/Deep-Incubation) to an mmpretrain one.

    python tools/convert_official.py vit_b_finished.pth vit-b.pth --config configs/incubate_vit_b.py
    python tools/convert_official.py meta_b.pth meta.pth --meta --module-depths 3 3 3 3
    python tools/convert_official.py meta_h.pth work_dirs/incubate_vit_h/meta/meta.pth --meta \\
        --config configs/incubate_vit_h.py      # then: tools/train.py configs/incubate_vit_h.py

A meta model (one block per module) becomes the product of our "meta" phase, for which the full
model's module depths are needed (--module-depths, --full-depth or --config); a full model becomes
an assembled checkpoint. With --config every key and shape is checked against the config's model.
Nothing is written unless the conversion succeeds.
"""
from __future__ import annotations

import argparse

from mmengine.config import Config, DictAction

import mmincubation  # noqa: F401  (compatibility fixes and registries)
from mmincubation.checkpoint import check_config_file, check_output
from mmincubation.convert_official import convert_official_file
from mmincubation.engine.runner.cli import exit_on_bad_input
from mmincubation.layout import LayoutError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Convert an official Deep Incubation checkpoint')
    parser.add_argument('src', help='official checkpoint ({"model": ..., "model_stages": [...], ...})')
    parser.add_argument('dst', help='output mmpretrain checkpoint')
    parser.add_argument('--meta', action='store_true', help='the input is a meta model (one block per module)')
    depths = parser.add_mutually_exclusive_group()
    depths.add_argument('--module-depths', type=int, nargs='+', help='module depths of the full model')
    depths.add_argument('--full-depth', type=int, help='full model depth, split into equal modules (--meta only)')
    parser.add_argument('--config', help='incubation config whose model the result must fit')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args(argv)
    if args.full_depth is not None and not args.meta:
        parser.error('--full-depth is only for --meta (a full model\'s depth is read from the file)')
    return args


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # refused before anything is read: a dst that is a folder, the src or the config
    check_output(args.dst, [args.src] + ([args.config] if args.config else []))
    reference, module_depths = None, args.module_depths
    if args.config:
        check_config_file(args.config)
        from mmincubation.engine.runner import build_layout, phase_recipe
        from mmincubation.engine.runner.fit_checks import full_model_shapes

        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        layout = build_layout(cfg)
        if layout.naming.name != 'vit':
            raise LayoutError(f'{args.config} has a {cfg.model.backbone.type} backbone; the official Deep '
                              'Incubation code has no Swin or other backbone than the ViT: nothing to convert')
        depths = list(layout.depths)
        if module_depths is not None and list(module_depths) != depths:
            raise LayoutError(f'--module-depths {module_depths} disagree with {args.config}\'s {depths}')
        if args.meta and args.full_depth is None:
            module_depths = depths
        reference = full_model_shapes(phase_recipe(cfg, 'meta' if args.meta else 'finetune'))
    out = convert_official_file(args.src, args.dst, meta=args.meta, module_depths=module_depths,
                                full_depth=args.full_depth, reference=reference)
    print(f'converted {args.src} ({"meta model" if args.meta else "full model"}) into {out}')


if __name__ == '__main__':
    main()
