"""Pasted Fashion-MNIST: a small real detection / instance- and semantic-segmentation data set.

There is no COCO or ADE20K on a CPU demo machine, so the downstream demo pastes real Fashion-MNIST
items (28x28, grayscale) onto larger black canvases: a few items per canvas, each rescaled by a
random factor and placed at a random position with a gap around its box, so no two items touch.
Everything is drawn from ``numpy.random.default_rng([seed, split, image index])``: an image depends
only on the seed, its split and its index (a data set of 16 images is the prefix of one of 400).
Training canvases take items from the Fashion-MNIST training set, validation canvases from its test
set.

An item's *foreground* is its rescaled pixels above ``threshold``; only those are pasted, so a
canvas pixel is non-zero exactly where some item's foreground is, each instance mask equals its
item's foreground, its box is the tight box of that mask and the semantic label map is the class
(1..10, 0 = background) of the item covering the pixel. One folder holds both tasks, read by stock
mmdet ``CocoDataset`` and mmseg ``BaseSegDataset`` (``metainfo=dict(classes=...)``, no new classes)::

    <root>/manifest.json                       parameters + file counts, written last
    <root>/images/{training,validation}/000000.png       the canvases (uint8, 1 channel)
    <root>/annotations/{training,validation}/000000.png  semantic labels (uint8, 0..10)
    <root>/annotations/instances_{train,val}.json        COCO instances, RLE masks, category ids 1..10

The folder is built under a temporary name next to ``root`` and renamed into place once complete,
so a half-written data set is never taken for a finished one; :func:`make_pasted_fashion_mnist`
skips the work when ``root`` holds a complete data set of the same parameters.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .fashion_mnist import DEBIAN_ROOT, IDX_MD5

#: Fashion-MNIST's classes in label order (as mmpretrain's ``FashionMNIST.METAINFO``).
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
           'Ankle boot')
#: Classes of the semantic data set: label 0 is the background, label i + 1 is ``CLASSES[i]``.
SEG_CLASSES = ('background', ) + CLASSES
#: One colour per semantic class (background black), for mmseg's visualiser.
SEG_PALETTE = [[0, 0, 0], [220, 20, 60], [119, 11, 32], [0, 0, 142], [0, 0, 230], [106, 0, 228],
               [0, 60, 100], [0, 80, 100], [0, 0, 70], [0, 0, 192], [250, 170, 30]]
#: Split name of the semantic folders (ADE style) and of the COCO json files.
SPLITS = {'training': 'train', 'validation': 'val'}
#: Fashion-MNIST file pair each split takes its items from.
SOURCES = {'training': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
           'validation': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
#: What a data set folder holds at its top level: anything else makes a folder not ours to replace.
TOP_LEVEL = frozenset({MANIFEST, 'images', 'annotations'})


class PastedDataError(ValueError):
    """A source file or the output folder cannot be used (named in the message); nothing was written or removed."""


@dataclass(frozen=True)
class PasteParams:
    """Everything a data set depends on (stored in its manifest).

    Args:
        num_train / num_val: canvases per split.
        canvas: side of the square canvases in pixels.
        seed: the data set's seed.
        min_items / max_items: items per canvas (fewer when the canvas is full, never none).
        min_scale / max_scale: an item's 28x28 image is resized to ``round(28 * scale)`` pixels square.
        threshold: foreground = resized pixel value > threshold.
        gap: minimum distance in pixels between the boxes of two items.
    """

    num_train: int = 400
    num_val: int = 100
    canvas: int = 64
    seed: int = 0
    min_items: int = 1
    max_items: int = 3
    min_scale: float = 0.75
    max_scale: float = 1.25
    threshold: int = 20
    gap: int = 2

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError('num_train and num_val must be positive')
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f'need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}')
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f'need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}')
        if round(28 * self.max_scale) > self.canvas:
            raise ValueError(f'canvas {self.canvas} is smaller than the largest item ({round(28 * self.max_scale)} px)')
        if not 0 <= self.threshold < 255:
            raise ValueError(f'threshold must be in [0, 255), got {self.threshold}')

    def num_images(self, split: str) -> int:
        return self.num_train if split == 'training' else self.num_val


# ----------------------------------------------------------------------------------------------- source data

def _read_idx(source_root: Path, name: str) -> bytes:
    """One decompressed, md5-verified IDX file from ``<name>.gz`` (Debian) or an extracted ``<name>``."""
    packed, plain = source_root / f'{name}.gz', source_root / name
    if source_root.exists() and not source_root.is_dir():
        raise PastedDataError(f'source root {source_root} is a file, expected the folder of the Fashion-MNIST IDX '
                              f'files (e.g. {DEBIAN_ROOT})')
    if packed.is_file():
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            raise PastedDataError(f'{packed} is not a complete gzip file ({type(error).__name__}: {error}): '
                                  'truncated or corrupt') from error
    elif plain.is_file():
        data = plain.read_bytes()
    else:
        raise FileNotFoundError(f'{packed} not found: install Debian\'s dataset-fashion-mnist or pass a folder '
                                'with the Fashion-MNIST IDX files (.gz or extracted)')
    md5 = hashlib.md5(data).hexdigest()
    if md5 != IDX_MD5[name]:
        raise PastedDataError(f'{source_root / name}: IDX data with md5 {md5}, expected {IDX_MD5[name]}: '
                              'corrupt or not Fashion-MNIST')
    return data


def load_fashion_mnist(source_root: str | os.PathLike = DEBIAN_ROOT,
                       split: str = 'training') -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) int64`` of a split ('training' or 'validation')."""
    images_name, labels_name = SOURCES[split]
    images = np.frombuffer(_read_idx(Path(source_root), images_name), dtype=np.uint8, offset=16)
    labels = np.frombuffer(_read_idx(Path(source_root), labels_name), dtype=np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------- generation

@dataclass
class PastedItem:
    """One pasted item: class (0..9), source image index, rendered size, foreground mask on the canvas, box."""

    label: int
    source_index: int
    size: int  # side of the resized 28x28 image before cropping to its foreground
    mask: np.ndarray  # (canvas, canvas) bool
    bbox: tuple[int, int, int, int]  # x, y, w, h of the tight box of ``mask`` (pixels, COCO convention)


def render_item(image: np.ndarray, size: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """The 28x28 item resized to ``size`` px square, cropped to its foreground's tight box.

    Returns ``(pixels, foreground)``: uint8 pixels with the background zeroed, and the bool foreground.
    """
    interpolation = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    foreground = resized > threshold
    rows, cols = np.flatnonzero(foreground.any(1)), np.flatnonzero(foreground.any(0))
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8), np.zeros((0, 0), bool)
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    foreground = foreground[crop]
    return np.where(foreground, resized[crop], 0).astype(np.uint8), foreground


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], gap: int) -> bool:
    x, y, w, h = box
    return any(x < bx + bw + gap and bx < x + w + gap and y < by + bh + gap and by < y + h + gap
               for bx, by, bw, bh in boxes)


def paste_canvas(params: PasteParams, split: str, index: int, images: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, list[PastedItem]]:
    """Canvas ``index`` of ``split``: a ``(canvas, canvas)`` uint8 image and its items.

    Drawn from ``default_rng([seed, split id, index])`` alone. An item is placed at a random position
    whose box keeps ``gap`` pixels from every box placed before; after 50 failed tries it is dropped
    (the first item always fits).
    """
    rng = np.random.default_rng([params.seed, list(SPLITS).index(split), index])
    side = params.canvas
    canvas = np.zeros((side, side), np.uint8)
    items: list[PastedItem] = []
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(params.min_items, params.max_items + 1))):
        while True:  # an item with some foreground (every Fashion-MNIST image has plenty)
            source_index = int(rng.integers(len(images)))
            size = int(round(28 * rng.uniform(params.min_scale, params.max_scale)))
            pixels, foreground = render_item(images[source_index], size, params.threshold)
            if foreground.any():
                break
        h, w = foreground.shape
        for _try in range(50):
            x, y = int(rng.integers(side - w + 1)), int(rng.integers(side - h + 1))
            if not _overlaps((x, y, w, h), boxes, params.gap):
                break
        else:
            continue
        region = (slice(y, y + h), slice(x, x + w))
        canvas[region][foreground] = pixels[foreground]
        mask = np.zeros((side, side), bool)
        mask[region] = foreground
        boxes.append((x, y, w, h))
        items.append(PastedItem(label=int(labels[source_index]), source_index=source_index, size=size, mask=mask,
                                bbox=(x, y, w, h)))
    return canvas, items


def semantic_labels(shape: tuple[int, int], items: list[PastedItem]) -> np.ndarray:
    """Per-pixel labels: 0 background, ``item.label + 1`` on each item's foreground."""
    seg = np.zeros(shape, np.uint8)
    for item in items:
        seg[item.mask] = item.label + 1
    return seg


def coco_annotation(item: PastedItem, ann_id: int, image_id: int) -> dict:
    """A COCO instance annotation: the tight box and the exact foreground as compressed RLE."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(item.mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=item.label + 1, bbox=[float(v) for v in item.bbox],
                area=float(item.mask.sum()), segmentation=rle, iscrowd=0)


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f'could not write {path}')


def write_split(root: Path, params: PasteParams, split: str, images: np.ndarray, labels: np.ndarray) -> dict:
    """Write one split's canvases, label maps and COCO json under ``root``; returns its counts."""
    image_dir, seg_dir = root / 'images' / split, root / 'annotations' / split
    image_dir.mkdir(parents=True, exist_ok=True)
    seg_dir.mkdir(parents=True, exist_ok=True)
    coco = dict(info=dict(description='Pasted Fashion-MNIST', version=str(FORMAT_VERSION)),
                images=[], annotations=[],
                categories=[dict(id=i + 1, name=name, supercategory='fashion') for i, name in enumerate(CLASSES)])
    for index in range(params.num_images(split)):
        canvas, items = paste_canvas(params, split, index, images, labels)
        name = f'{index:06d}.png'
        _write_png(image_dir / name, canvas)
        _write_png(seg_dir / name, semantic_labels(canvas.shape, items))
        image_id = index + 1
        coco['images'].append(dict(id=image_id, file_name=name, width=params.canvas, height=params.canvas))
        for item in items:
            coco['annotations'].append(coco_annotation(item, len(coco['annotations']) + 1, image_id))
    with open(root / 'annotations' / f'instances_{SPLITS[split]}.json', 'w') as f:
        json.dump(coco, f)
    return dict(images=len(coco['images']), instances=len(coco['annotations']))


# ----------------------------------------------------------------------------------------------- the folder

def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete data set in ``root``, else None."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get('complete') else None


def is_complete(root: str | os.PathLike, params: PasteParams) -> bool:
    """Whether ``root`` holds a complete data set made with exactly these parameters."""
    manifest = read_manifest(root)
    return (manifest is not None and manifest.get('format_version') == FORMAT_VERSION
            and manifest.get('params') == asdict(params))


def check_output_folder(root: Path, source_root: str | os.PathLike) -> None:
    """Refuse an output folder whose replacement would lose something that is not a data set of ours."""
    source = Path(source_root).resolve()
    if root.resolve() == source or root.resolve() in source.parents:
        raise PastedDataError(f'output folder {root} holds the source files ({source_root}): building the data set '
                              'there would replace them; choose another folder')
    if root.exists() and not root.is_dir():
        raise PastedDataError(f'output {root} is a file, expected a folder for the data set; choose another path')
    if root.is_dir() and read_manifest(root) is None:
        foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in TOP_LEVEL)
        if foreign:
            shown = ', '.join(foreign[:5]) + (f', ... ({len(foreign)} in all)' if len(foreign) > 5 else '')
            raise PastedDataError(f'output folder {root} exists and is not a pasted Fashion-MNIST data set (it holds '
                                  f'{shown}): replacing it would delete them; choose another folder or empty it')


def make_pasted_fashion_mnist(root: str | os.PathLike, params: PasteParams | None = None,
                              source_root: str | os.PathLike = DEBIAN_ROOT, force: bool = False) -> bool:
    """Build the data set in ``root`` unless a complete one of the same parameters is there.

    Returns True when it was (re)built. A complete data set of *other* parameters is replaced only with
    ``force=True``; an incomplete one (no manifest: an interrupted run of an older version) is replaced.

    Raises:
        PastedDataError: before anything is written, when ``root`` is a file, holds or is ``source_root``,
            or is a folder with other things in it than a data set (``force`` or not: it is not ours to
            delete); or when a source file is truncated or not Fashion-MNIST.
        FileExistsError: ``root`` holds a complete data set of other parameters and ``force`` is False.
        FileNotFoundError: a source file is missing.
    """
    params = params or PasteParams()
    root = Path(root)
    check_output_folder(root, source_root)
    if is_complete(root, params) and not force:
        return False
    if root.exists() and read_manifest(root) is not None and not force:
        raise FileExistsError(f'{root} holds a data set of other parameters ({read_manifest(root)["params"]}): '
                              'pass force=True (--force) to replace it, or choose another folder')
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f'.{root.name}.tmp-'))
    try:
        counts = {}
        for split in SPLITS:
            images, labels = load_fashion_mnist(source_root, split)
            counts[split] = write_split(tmp, params, split, images, labels)
        manifest = dict(complete=True, format_version=FORMAT_VERSION, params=asdict(params), classes=list(CLASSES),
                        seg_classes=list(SEG_CLASSES), counts=counts)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + '\n')
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if root.exists():  # move the old folder aside first: a rename cannot replace a non-empty folder
            old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f'.{root.name}.old-'))
            os.replace(root, old / root.name)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
