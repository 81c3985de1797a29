"""Write an mmpretrain / mmincubation checkpoint's state dict as safetensors.

    python tools/model_converters/to_safetensors.py work_dirs/incubate_vit_b/finetune/finetuned.pth vit-b.safetensors

The keys and tensors are the checkpoint's own (they load into the same mmpretrain model with
``load_state_dict(strict=True)`` and give identical logits); the metadata holds the mmincubation tag and
``dataset_meta`` (the class names) as JSON strings (``mmincubation.export.read_safetensors`` reads both back).
An existing output is refused unless --force; the file is written atomically.
"""
from __future__ import annotations

import argparse

from mmincubation.engine.runner.cli import exit_on_bad_input
from mmincubation.export import export_safetensors_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Write a checkpoint\'s state dict as safetensors')
    parser.add_argument('checkpoint', help='mmpretrain / mmincubation checkpoint')
    parser.add_argument('out', help='output file, NAME.safetensors')
    parser.add_argument('--force', action='store_true', help='replace an existing output')
    return parser.parse_args(argv)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = export_safetensors_file(args.checkpoint, args.out, force=args.force)
    print(f'wrote the state dict of {args.checkpoint} to {out}')


if __name__ == '__main__':
    main()
