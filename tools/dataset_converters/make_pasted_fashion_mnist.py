"""Build the pasted Fashion-MNIST data set (COCO instances + ADE-style semantic labels) of the downstream demo.

    python tools/dataset_converters/make_pasted_fashion_mnist.py --out data/pasted_fashion_mnist \\
        --num-train 400 --num-val 100 --canvas 96 --seed 0

Real Fashion-MNIST items pasted onto black canvases (see mmincubation/datasets/pasted_fashion_mnist.py).
Idempotent: a complete data set of the same parameters in --out (its manifest.json) is kept as is; one of
other parameters is replaced only with --force. The folder appears only once complete. An --out that is a
file, holds the source files or holds anything but a data set is refused before anything is written.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import fields

from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.datasets.pasted_fashion_mnist import PastedDataError, PasteParams, make_pasted_fashion_mnist

DEFAULTS = PasteParams()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Paste Fashion-MNIST items onto canvases: COCO + semantic data')
    parser.add_argument('--out', default='data/pasted_fashion_mnist', help='output folder')
    parser.add_argument('--source-root', default=DEBIAN_ROOT, help='folder of the Fashion-MNIST IDX files (.gz)')
    parser.add_argument('--force', action='store_true', help='replace a data set of other parameters in --out')
    for field in fields(PasteParams):
        default = getattr(DEFAULTS, field.name)
        parser.add_argument(f'--{field.name.replace("_", "-")}', type=type(default), default=default,
                            help=f'(default: {default})')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> bool:
    args = parse_args(argv)
    try:
        params = PasteParams(**{field.name: getattr(args, field.name) for field in fields(PasteParams)})
    except ValueError as error:
        raise SystemExit(f'error: {error}') from error
    start = time.perf_counter()
    try:
        built = make_pasted_fashion_mnist(args.out, params, source_root=args.source_root, force=args.force)
    except (PastedDataError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f'error: {error}') from error
    if built:
        print(f'wrote {args.out} ({params.num_train} + {params.num_val} canvases of {params.canvas} px) '
              f'in {time.perf_counter() - start:.1f} s')
    else:
        print(f'{args.out} is complete with these parameters: nothing to do')
    return built


if __name__ == '__main__':
    main()
