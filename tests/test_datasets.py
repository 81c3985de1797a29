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


@needs_data
def test_demo_evaluation_sets_are_the_test_images_and_say_so(tmp_path):
    """Val (2k) and test (10k) sets of the Fashion-MNIST configs read t10k-*, with no warning that they do not."""
    import logging

    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS

    cfg = Config.fromfile(str(Path(__file__).resolve().parents[1] / 'configs' / 'incubate_demo_fashion_mnist.py'))
    raw = gzip.decompress((Path(DEBIAN_ROOT) / 't10k-labels-idx1-ubyte.gz').read_bytes())
    test_labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)  # IDX: 8-byte header
    warnings = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = warnings.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        for loader, size in (('val_dataloader', 2000), ('test_dataloader', 10000)):
            dataset_cfg = cfg[loader].dataset
            assert (dataset_cfg.split, dataset_cfg.test_mode) == ('test', True)
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                dataset = DATASETS.build(dict(dataset_cfg, data_root=str(tmp_path)))
            assert len(dataset) == size
            assert (dataset.get_gt_labels() == test_labels[:size]).all()
    finally:
        logger.removeHandler(handler)
    assert not [record for record in warnings if 'split="train"' in record.getMessage()]
    # the control: the settings of before (test_mode only) did print it
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        logger.addHandler(handler)
        try:
            DATASETS.build(dict(cfg.test_dataloader.dataset, data_root=str(tmp_path), split='train'))
        finally:
            logger.removeHandler(handler)
    assert [record for record in warnings if 'split="train" but test_mode=True' in record.getMessage()]
