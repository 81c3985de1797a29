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
"""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import cv2
import numpy as np

CLASSES = ('Tree', )
TRAIN = ('2019_YELL_2_541000_4977000_image_crop', '2019_YELL_2_528000_4978000_image_crop2')
VAL = ('OSBS_029', 'SOAP_061')
#: Fraction of a box's area that must lie in a tile for the tile to keep it.
MIN_INSIDE = 0.5


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


def convert(out: str | Path, tile: int | None = 400, source: Path | None = None) -> dict:
    """Write the data set into ``out``; returns ``{split: (images, boxes)}``."""
    source = source or deepforest_data()
    out = Path(out)
    counts = {}
    for split, names, cut, folder in (('train', TRAIN, tile, 'training'), ('val', VAL, None, 'validation')):
        (out / 'images' / folder).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for name in names:
            image = cv2.imread(str(source / f'{name}.png'), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f'error: cannot read {source / f"{name}.png"}')
            boxes = read_boxes(source / f'{name}.xml')
            for index, window in enumerate(tiles(*image.shape[:2], cut)):
                x0, y0, x1, y1 = window
                file_name = f'{name}_{index:03d}.png' if cut else f'{name}.png'
                cv2.imwrite(str(out / 'images' / folder / file_name), image[y0:y1, x0:x1])
                image_id = len(images) + 1
                images.append(dict(id=image_id, file_name=file_name, width=x1 - x0, height=y1 - y0))
                for bx0, by0, bx1, by1 in boxes_in(boxes, window).tolist():
                    annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=1,
                                            bbox=[bx0, by0, bx1 - bx0, by1 - by0], area=(bx1 - bx0) * (by1 - by0),
                                            iscrowd=0))
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)])
        (out / 'annotations').mkdir(exist_ok=True)
        (out / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
        counts[split] = (len(images), len(annotations))
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="deepforest's tree-crown photos -> a COCO detection set")
    parser.add_argument('out', help='output folder, e.g. data/deepforest_trees')
    parser.add_argument('--tile', type=int, default=400, help='tile side of the training photos, px')
    args = parser.parse_args(argv)
    counts = convert(args.out, args.tile)
    for split, (images, boxes) in counts.items():
        print(f'{split}: {images} images, {boxes} boxes')
    return counts


if __name__ == '__main__':
    main()
