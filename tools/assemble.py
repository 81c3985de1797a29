"""Assemble incubated modules into one plain mmpretrain checkpoint of the full model.

    python tools/assemble.py configs/incubate_vit_b.py --modules m0.pth m1.pth m2.pth m3.pth --out vit-b.pth
    python tools/assemble.py configs/incubate_vit_b.py --work-dir work_dirs/incubate_vit_b   # its module files

Nothing is written unless every module is present once, all come from the config's layout and every
key and shape fits the config's full model; an --out that is a folder, a module or the config is refused.
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

import mmincubation  # noqa: F401
from mmincubation.assemble import assemble
from mmincubation.checkpoint import check_config_file, check_output
from mmincubation.engine.runner import Phase, build_layout, phase_recipe
from mmincubation.engine.runner.cli import exit_on_bad_input, load_config
from mmincubation.engine.runner.fit_checks import full_model_shapes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Assemble incubated modules into a full checkpoint')
    parser.add_argument('config', help='the whole-pipeline incubation config')
    parser.add_argument('--modules', nargs='+', help='module checkpoints (default: those in the work dir)')
    parser.add_argument('--work-dir', help='pipeline work dir (default: work_dirs/<config name>)')
    parser.add_argument('--out', help='output checkpoint (default: <work dir>/assembled.pth)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_config_file(args.config)
    if args.out:  # refused before anything is read: an --out that is a folder, a module or the config
        check_output(args.out, [*(args.modules or []), args.config])
    cfg = load_config(args)
    layout = build_layout(cfg)
    modules = args.modules or [str(step.product(cfg.work_dir)) for step in Phase('assemble').inputs(layout.num_modules)]
    out = assemble(modules, args.out or Phase('assemble').product(cfg.work_dir),
                   reference=full_model_shapes(phase_recipe(cfg, 'finetune')), layout=layout)
    print(f'assembled {len(modules)} modules into {out}')


if __name__ == '__main__':
    main()
