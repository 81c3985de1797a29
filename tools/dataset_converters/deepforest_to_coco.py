"""The tree-crown photos that the ``deepforest`` package ships, as a small COCO detection set (boxes only).

    python tools/dataset_converters/deepforest_to_coco.py data/deepforest_trees

``deepforest`` (PyPI, MIT licence; installed without its dependencies by tools/install.sh, only its ``data/``
folder is used) ships RGB aerial photos of the NEON network with hand-drawn tree-crown boxes in Pascal VOC XML.
They become a data set laid out as the downstream demo's (so its configs read it unchanged):

    images/training/*.png, images/validation/*.png, annotations/instances_{train,val}.json

* training: the two Yellowstone crops (2019_YELL_2_*: 1249x1035 and 2299x2472 px, 853 trees), cut into tiles of
  ``--tile`` px (the last row / column smaller); a box is kept in a tile, clipped, when at least half of its
  area lies inside;
* validation: OSBS_029 and SOAP_061 (400x400 px each, 98 trees; SOAP_061 labels its trees Alive / Dead, both
  are the one class here), whole.

One class, ``Tree``. The output is the same for the same ``--tile`` (PNG files, sorted ids).

The folder must be new, empty or hold exactly this converter's earlier output: it lists the files it wrote and
their SHA-256 in ``deepforest_to_coco.manifest.json``, and a rerun replaces only files that are as it wrote them
(those of the earlier output that the new one does not have are removed). A folder that holds any other file,
or a ``--tile`` below 1 px, is refused in one line before anything is written. Each file is written atomically
(a temporary file renamed over it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import cv2
import numpy as np

from mmincubation.checkpoint import write_atomic

CLASSES = ('Tree', )
TRAIN = ('2019_YELL_2_541000_4977000_image_crop', '2019_YELL_2_528000_4978000_image_crop2')
VAL = ('OSBS_029', 'SOAP_061')
#: Fraction of a box's area that must lie in a tile for the tile to keep it.
MIN_INSIDE = 0.5
#: What the converter wrote into its output folder: ``{"tool", "tile", "files": {path: [sha256, ...]}}``.
MANIFEST = 'deepforest_to_coco.manifest.json'


def deepforest_data() -> Path:
    """The ``data/`` folder of the installed ``deepforest`` distribution (found without importing it).

    Raises:
        SystemExit: when deepforest is not installed, naming the install command.
    """
    try:
        folder = Path(distribution('deepforest').locate_file('deepforest/data'))
    except PackageNotFoundError:
        folder = None
    if folder is None or not (folder / f'{VAL[0]}.xml').is_file():
        raise SystemExit("error: deepforest's data is not installed: run tools/install.sh (or "
                         "pip install --no-deps -r requirements/data.txt)")
    return folder


def read_boxes(xml_path: Path) -> np.ndarray:
    """Boxes ``(N, 4)`` as ``x1, y1, x2, y2`` in pixels (float) of a Pascal VOC annotation file."""
    boxes = [[float(obj.find(f'bndbox/{k}').text) for k in ('xmin', 'ymin', 'xmax', 'ymax')]
             for obj in ET.parse(xml_path).getroot().iter('object')]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def tiles(height: int, width: int, tile: int | None) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` of the non-overlapping tiles covering the image (one tile if ``tile`` is None)."""
    if tile is None:
        return [(0, 0, width, height)]
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in range(0, height, tile)
            for x in range(0, width, tile)]


def boxes_in(boxes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """``boxes`` clipped to ``window``, in its coordinates; those with less than MIN_INSIDE of their area dropped."""
    x0, y0, x1, y1 = window
    clipped = np.stack([boxes[:, 0].clip(x0, x1), boxes[:, 1].clip(y0, y1),
                        boxes[:, 2].clip(x0, x1), boxes[:, 3].clip(y0, y1)], axis=1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside >= MIN_INSIDE * area
    return clipped[keep] - np.array([x0, y0, x0, y0], dtype=np.float64)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(out: Path) -> dict[str, list[str]] | None:
    """``{path: sha256s}`` of the manifest in ``out``; None when there is none or it is not this converter's."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        files = manifest['files']
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get('tool') != 'deepforest_to_coco' or not isinstance(files, dict) or not all(
            isinstance(hashes, list) and all(isinstance(h, str) for h in hashes) for hashes in files.values()):
        return None
    return files


def check_output_folder(out: Path) -> dict[str, list[str]]:
    """The files of this converter's earlier output in ``out`` (``{path: sha256s}``, empty for a new folder).

    Raises:
        FileExistsError: ``out`` is a file, or holds a file (or link) that is not in the manifest of an earlier
            output as it was written there: naming the folder and the first such file.
    """
    if not out.exists():
        return {}
    if not out.is_dir():
        raise FileExistsError(f'output {out} is a file, expected a folder for the data set: choose another path')
    earlier = _read_manifest(out)
    for path in sorted(out.rglob('*')):
        if path.is_dir() and not path.is_symlink():
            continue
        name = path.relative_to(out).as_posix()
        if earlier is not None and (name == MANIFEST or name in earlier and not path.is_symlink()
                                    and _sha256(path.read_bytes()) in earlier[name]):
            continue
        raise FileExistsError(f'output folder {out} holds files this converter did not write (first: {name}): '
                              'nothing was written; choose a new or empty folder')
    return earlier or {}


def build(tile: int | None, source: Path) -> tuple[dict[str, bytes], dict[str, tuple[int, int]]]:
    """The data set's files (``{path in the folder: bytes}``) and ``{split: (images, boxes)}``."""
    files, counts = {}, {}
    for split, names, cut, folder in (('train', TRAIN, tile, 'training'), ('val', VAL, None, 'validation')):
        images, annotations = [], []
        for name in names:
            image = cv2.imread(str(source / f'{name}.png'), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f'error: cannot read {source / f"{name}.png"}')
            boxes = read_boxes(source / f'{name}.xml')
            for index, window in enumerate(tiles(*image.shape[:2], cut)):
                x0, y0, x1, y1 = window
                file_name = f'{name}_{index:03d}.png' if cut else f'{name}.png'
                files[f'images/{folder}/{file_name}'] = cv2.imencode('.png', image[y0:y1, x0:x1])[1].tobytes()
                image_id = len(images) + 1
                images.append(dict(id=image_id, file_name=file_name, width=x1 - x0, height=y1 - y0))
                for bx0, by0, bx1, by1 in boxes_in(boxes, window).tolist():
                    annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=1,
                                            bbox=[bx0, by0, bx1 - bx0, by1 - by0], area=(bx1 - bx0) * (by1 - by0),
                                            iscrowd=0))
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)])
        files[f'annotations/instances_{split}.json'] = json.dumps(coco).encode()
        counts[split] = (len(images), len(annotations))
    return files, counts


def _write_manifest(out: Path, tile: int | None, files: dict[str, list[str]]) -> None:
    text = json.dumps(dict(tool='deepforest_to_coco', tile=tile, files=files), indent=1, sort_keys=True) + '\n'
    write_atomic(out / MANIFEST, lambda f: f.write(text.encode()))


def convert(out: str | Path, tile: int | None = 400, source: Path | None = None) -> dict:
    """Write the data set into ``out``; returns ``{split: (images, boxes)}``.

    ``tile``: side of the training tiles, px (None: whole photos). ``out`` must be new, empty or hold this
    converter's earlier output (see the module docstring). The manifest is written first, listing the new files
    and those of the earlier output, so that an interrupted run leaves a folder that a rerun recognises.

    Raises:
        ValueError: ``tile`` is not a positive int.
        FileExistsError: ``out`` is a file or holds files the converter did not write (nothing is written).
        SystemExit: deepforest's data is not installed or unreadable.
    """
    if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 1):
        raise ValueError(f'tile must be a positive int (px) or None, got {tile!r}')
    out = Path(out)
    earlier = check_output_folder(out)
    files, counts = build(tile, source or deepforest_data())
    hashes = {name: [_sha256(data)] for name, data in files.items()}
    _write_manifest(out, tile, {name: sorted(set(hashes.get(name, []) + earlier.get(name, [])))
                                for name in hashes.keys() | earlier.keys()})
    for name, data in files.items():
        write_atomic(out / name, lambda f, data=data: f.write(data))
    for name in earlier.keys() - files.keys():
        (out / name).unlink(missing_ok=True)
    _write_manifest(out, tile, hashes)
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="deepforest's tree-crown photos -> a COCO detection set")
    parser.add_argument('out', help='output folder, e.g. data/deepforest_trees')
    parser.add_argument('--tile', type=int, default=400, help='tile side of the training photos, px (>= 1)')
    args = parser.parse_args(argv)
    if args.tile < 1:
        parser.error(f'argument --tile: must be a positive number of px, got {args.tile}')
    earlier = Path(args.out, MANIFEST).is_file()
    try:
        counts = convert(args.out, args.tile)
    except FileExistsError as error:
        raise SystemExit(f'error: {error}') from error
    if earlier:
        print(f"{args.out}: replaced this converter's earlier output (its files were as it wrote them: {MANIFEST})")
    for split, (images, boxes) in counts.items():
        print(f'{split}: {images} images, {boxes} boxes')
    return counts


if __name__ == '__main__':
    main()
