"""Make the meta model of an incubation config from a pretrained network of the same width.

    python tools/make_meta.py work_dirs/vit-8/e2e/e2e.pth configs/incubate_vit_32.py   # -> <work_dir>/meta/meta.pth
    python tools/make_meta.py deit_small.pth configs/incubate_deit_s.py --blocks 0 3 7 11 --cost 4.6e9
    python tools/make_meta.py epoch_300.pth configs/incubate_deit_s.py --ema --out work_dirs/ema_meta.pth
    python tools/train.py configs/incubate_vit_32.py      # the meta phase is then skipped: its product exists

The pretrained file may be one of our products (meta, assembled, fine-tuned, E2E), a plain mmpretrain
classifier or backbone checkpoint, an official Deep Incubation checkpoint or a timm ViT state dict. Its
stem, K blocks (evenly spaced, first and last included, unless --blocks), final norm and head (reused
when it fits, else the config's freshly initialised one) become a meta checkpoint the incubate phase
accepts. EMA copies in the source (mmcv 1.x ``ema_*`` buffers, MMEngine's ``ema_state_dict``) are used
with --ema, else named and ignored; keys that are neither weights nor EMA copies are named as unused.
Nothing is written unless the source fits the config (same width, patch size, backbone kind, finite
values), nor ever over an existing file: choose another --out, or move the old one away first.
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

import mmincubation  # noqa: F401  (compatibility fixes and registries)
from mmincubation.checkpoint import check_config_file, check_output
from mmincubation.engine.runner import Phase
from mmincubation.engine.runner.cli import exit_on_bad_input, load_config
from mmincubation.make_meta import write_meta


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Make a meta model from a pretrained network')
    parser.add_argument('pretrained', help='pretrained checkpoint (ours, mmpretrain, official Deep Incubation, timm)')
    parser.add_argument('config', help='the whole-pipeline incubation config')
    parser.add_argument('--out', help='output meta checkpoint, which must not exist (default: <work dir>/meta/'
                                      'meta.pth, where the pipeline looks for the meta phase\'s product)')
    parser.add_argument('--blocks', type=int, nargs='+',
                        help='source block indices for meta blocks 0..K-1 (default: evenly spaced)')
    parser.add_argument('--cost', type=float,
                        help='what training the source cost, in block-images (default: read from its phase '
                             'records when it is one of our products, else unknown)')
    parser.add_argument('--ema', action='store_true',
                        help='use the source\'s EMA copies of its weights (mmcv 1.x ema_* buffers, MMEngine '
                             'ema_state_dict) instead of the raw weights')
    parser.add_argument('--work-dir', help='pipeline work dir (default: the config\'s, else work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    check_config_file(args.config)
    if args.out:  # refused before anything is read: an --out that is a folder, the source or the config
        check_output(args.out, [args.pretrained, args.config])
    cfg = load_config(args, keep_work_dir=True)
    out = args.out or Phase('meta').product(cfg.work_dir)
    record = write_meta(args.pretrained, cfg, out, blocks=args.blocks, cost=args.cost, ema=args.ema)
    source = record['pretrained']
    cost = 'unknown' if source['cost'] is None else f'{source["cost"] / 1e6:.3g} M block-images ({source["cost_from"]})'
    print(f'meta model (layout {record["layout"]}) from blocks {source["blocks"]} of {source["depth"]} of '
          f'{args.pretrained} ({source["kind"]}, {source["weights"]} weights), head {source["head"]}: {out}\n'
          f'pretraining cost: {cost}')
    return record


if __name__ == '__main__':
    main()
