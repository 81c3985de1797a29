"""Fashion-MNIST from compressed IDX files, such as those of Debian's ``dataset-fashion-mnist``.

mmpretrain's ``FashionMNIST`` reads *uncompressed* IDX files, and its md5 sums are those of the
upstream ``.gz`` files, which Debian recompressed (same data, other bytes). We check the md5 of the
*decompressed* data instead (equal upstream and in Debian), so integrity is still verified, and
extract once into the dataset's ``data_root``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from mmengine import dist
from mmengine.fileio import join_path
from mmpretrain.datasets import FashionMNIST
from mmpretrain.datasets.mnist import read_image_file, read_label_file
from mmpretrain.datasets.utils import rm_suffix

from ..registry import DATASETS

DEBIAN_ROOT = '/usr/share/datasets/fashion-mnist'

#: md5 of each decompressed IDX file.
IDX_MD5 = {
    'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
    'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
    't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
    't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965',
}


def extract_fashion_mnist(source_root: str | os.PathLike, data_root: str | os.PathLike) -> list[Path]:
    """Decompress the four ``.gz`` IDX files into ``data_root``, verifying each one's md5.

    Files already present with the right checksum are kept. A file that fails the check is never
    written: data goes to a temporary file that is renamed only once verified.
    """
    source_root, data_root = Path(source_root), Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, md5 in IDX_MD5.items():
        target = data_root / name
        if target.is_file() and _md5(target.read_bytes()) == md5:
            continue
        source = source_root / f'{name}.gz'
        if not source.is_file():
            raise FileNotFoundError(f'{source} not found: install Debian\'s dataset-fashion-mnist or set '
                                    f'source_root to a folder with the four Fashion-MNIST .gz files')
        data = gzip.decompress(source.read_bytes())
        if _md5(data) != md5:
            raise ValueError(f'{source} decompresses to data with md5 {_md5(data)}, expected {md5}: '
                             'the file is corrupt or not Fashion-MNIST')
        fd, tmp = tempfile.mkstemp(dir=data_root, prefix=f'.{name}.')
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, target)
        written.append(target)
    return written


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@DATASETS.register_module()
class CompressedFashionMNIST(FashionMNIST):
    """mmpretrain's ``FashionMNIST``, extracted on first use from verified ``.gz`` files.

    Args:
        source_root: folder holding the ``.gz`` files (default: Debian's package).
        indices: as in mmpretrain, e.g. an int to train on the first N images only.
    """

    def __init__(self, *args, source_root: str = DEBIAN_ROOT, **kwargs) -> None:
        self.source_root = source_root
        kwargs.setdefault('download', False)
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        root = self.data_prefix['root']
        if dist.is_main_process() and not self._check_exists():
            extract_fashion_mnist(self.source_root, root)
        dist.barrier()
        (images, _), (labels, _) = self.test_list if self.test_mode else self.train_list
        images = read_image_file(join_path(root, rm_suffix(images))).numpy()
        labels = read_label_file(join_path(root, rm_suffix(labels))).numpy().astype(np.int64)
        # mmpretrain converts each 0-d label tensor with np.array(tensor), which numpy 2 warns about once
        # per image (torch's __array__ lacks the `copy` keyword): 70k warnings and slow loading. The
        # labels are converted in one go here instead, giving the same int64 0-d arrays.
        return [{'img': image, 'gt_label': np.array(label)} for image, label in zip(images, labels)]
