"""Build the pasted Fashion-MNIST data set (COCO instances + ADE-style semantic labels) of the downstream demo.

    python tools/dataset_converters/make_pasted_fashion_mnist.py --out data/pasted_fashion_mnist \\
        --num-train 400 --num-val 100 --canvas 96 --seed 0

Real Fashion-MNIST items pasted onto black canvases (see mmincubation/datasets/pasted_fashion_mnist.py).
Idempotent: a complete data set of the same parameters in --out (its manifest.json) is kept as is; one of
other parameters is replaced only with --force. The folder appears only once complete. An --out that is a
file, holds the source files, holds anything but a data set or is a folder of files without the manifest (a
data set of the same layout that this tool did not make, e.g. one's own COCO set) is refused before anything is
written, and so is a numeric argument out of its range (--seed -1, --gap -5).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.datasets.pasted_fashion_mnist import (
    MANIFEST,
    PastedDataError,
    PasteParams,
    check_output_folder,
    make_pasted_fashion_mnist,
    read_manifest,
)

DEFAULTS = PasteParams()
#: The range of each numeric argument (PasteParams checks how they combine: min <= max, items fit the canvas).
RANGES = {'num_train': ('>= 1', lambda v: v >= 1), 'num_val': ('>= 1', lambda v: v >= 1),
          'canvas': ('>= 1', lambda v: v >= 1), 'seed': ('>= 0', lambda v: v >= 0),
          'min_items': ('>= 1', lambda v: v >= 1), 'max_items': ('>= 1', lambda v: v >= 1),
          'min_scale': ('> 0', lambda v: v > 0), 'max_scale': ('> 0', lambda v: v > 0),
          'threshold': ('in [0, 255)', lambda v: 0 <= v < 255), 'gap': ('>= 0', lambda v: v >= 0)}


def check_unmade_folder(root: Path) -> None:
    """Refuse a folder that holds files but no manifest: a data set (or anything) this tool did not make, which
    :func:`make_pasted_fashion_mnist` would replace as an interrupted build of an older version.

    Raises:
        PastedDataError: naming the folder and its first file.
    """
    if root.is_dir() and read_manifest(root) is None:
        first = next((path for path in sorted(root.rglob('*')) if not path.is_dir() or path.is_symlink()), None)
        if first is not None:
            raise PastedDataError(f'output folder {root} holds files but no {MANIFEST} (first: '
                                  f'{first.relative_to(root)}): it is no pasted Fashion-MNIST data set made here, '
                                  'and building one would delete them; choose another folder or empty it')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Paste Fashion-MNIST items onto canvases: COCO + semantic data')
    parser.add_argument('--out', default='data/pasted_fashion_mnist', help='output folder')
    parser.add_argument('--source-root', default=DEBIAN_ROOT, help='folder of the Fashion-MNIST IDX files (.gz)')
    parser.add_argument('--force', action='store_true', help='replace a data set of other parameters in --out')
    for field in fields(PasteParams):
        default = getattr(DEFAULTS, field.name)
        parser.add_argument(f'--{field.name.replace("_", "-")}', type=type(default), default=default,
                            help=f'(default: {default}; {RANGES[field.name][0]})')
    args = parser.parse_args(argv)
    for name, (needs, accepts) in RANGES.items():
        if not accepts(getattr(args, name)):
            parser.error(f'argument --{name.replace("_", "-")}: must be {needs}, got {getattr(args, name)}')
    return args


def main(argv: list[str] | None = None) -> bool:
    args = parse_args(argv)
    try:
        params = PasteParams(**{field.name: getattr(args, field.name) for field in fields(PasteParams)})
    except ValueError as error:
        raise SystemExit(f'error: {error}') from error
    start = time.perf_counter()
    try:
        check_output_folder(Path(args.out), args.source_root)
        check_unmade_folder(Path(args.out))
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
