"""Fashion-MNIST from Debian's recompressed files: verified extraction and mmpretrain loading."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mmincubation.datasets import CompressedFashionMNIST, extract_fashion_mnist
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT, IDX_MD5

needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


@needs_data
def test_extraction_verifies_and_mmpretrain_reads_the_result(tmp_path):
    written = extract_fashion_mnist(DEBIAN_ROOT, tmp_path)
    assert sorted(p.name for p in written) == sorted(IDX_MD5)
    assert extract_fashion_mnist(DEBIAN_ROOT, tmp_path) == []  # verified files are kept, not rewritten

    train = CompressedFashionMNIST(data_root=str(tmp_path), test_mode=False, pipeline=[])
    test = CompressedFashionMNIST(data_root=str(tmp_path / 'other'), source_root=DEBIAN_ROOT, test_mode=True,
                                  pipeline=[])
    assert len(train) == 60000 and len(test) == 10000
    item = train[0]
    assert item['img'].shape == (28, 28) and item['img'].dtype == np.uint8
    labels = train.get_gt_labels()
    assert np.bincount(labels).tolist() == [6000] * 10  # Fashion-MNIST is exactly balanced
    assert train.CLASSES[int(item['gt_label'])] == 'Ankle boot'  # the first training image is a boot


@needs_data
def test_corrupt_source_is_refused_and_nothing_is_written(tmp_path):
    source = tmp_path / 'source'
    source.mkdir()
    for name in IDX_MD5:
        data = gzip.decompress((Path(DEBIAN_ROOT) / f'{name}.gz').read_bytes())
        if name == 't10k-labels-idx1-ubyte':
            data = data[:-1] + bytes([(data[-1] + 1) % 10])  # one flipped label
        (source / f'{name}.gz').write_bytes(gzip.compress(data))
    target = tmp_path / 'data'
    with pytest.raises(ValueError, match='t10k-labels-idx1-ubyte.gz decompresses to data with md5'):
        extract_fashion_mnist(source, target)
    assert not (target / 't10k-labels-idx1-ubyte').exists()
    assert not [p for p in target.iterdir() if p.name.startswith('.')]


def test_missing_source_names_the_file_and_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz not found: install Debian's"):
        extract_fashion_mnist(tmp_path / 'nowhere', tmp_path / 'data')
