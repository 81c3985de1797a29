"""Class-balanced K-way splits for decentralized modular training (DMT)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS
from mmengine.runner import Runner
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS

from mmincubation.datasets.dmt_split import ClassBalancedSplitDataset, class_balanced_splits
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT, extract_fashion_mnist
from mmincubation.engine.runner import phase_recipe

DMT_CONFIG = 'configs/incubate_demo_fashion_mnist_dmt.py'
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


@MMPRETRAIN_DATASETS.register_module(force=True)
class TinyLabelledDataset(BaseDataset):
    """In-memory mmpretrain dataset: sample i is the number i with the given label."""

    METAINFO = dict(classes=('a', 'b', 'c', 'd'))

    def __init__(self, labels, **kwargs) -> None:
        self.labels = list(labels)
        kwargs.setdefault('pipeline', [])
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> list[dict]:
        return [dict(value=i, gt_label=int(label)) for i, label in enumerate(self.labels)]


def imbalanced_labels(seed: int = 0) -> np.ndarray:
    """5 classes of 1, 7, 13, 40 and 99 samples, shuffled."""
    labels = np.concatenate([np.full(count, label) for label, count in enumerate((1, 7, 13, 40, 99))])
    return np.random.default_rng(seed).permutation(labels)


def check_partition(splits: list[np.ndarray], labels: np.ndarray) -> None:
    """Disjoint, covering, class-balanced within one sample per class, sizes within one."""
    joined = np.concatenate(splits)
    assert len(joined) == len(labels) and set(joined.tolist()) == set(range(len(labels)))
    for label in np.unique(labels):
        counts = [int((labels[split] == label).sum()) for split in splits]
        assert max(counts) - min(counts) <= 1, (label, counts)
    sizes = [len(split) for split in splits]
    assert max(sizes) - min(sizes) <= 1, sizes


@pytest.mark.parametrize('num_splits', [1, 2, 3, 4, 7, 250])
def test_splits_are_a_class_balanced_partition(num_splits):
    labels = imbalanced_labels()
    splits = class_balanced_splits(labels, num_splits, seed=3)
    assert len(splits) == num_splits
    check_partition(splits, labels)
    assert all(np.all(np.diff(split) > 0) for split in splits)  # sorted, no repeats


def test_splits_are_deterministic_per_seed_and_differ_across_seeds():
    labels = imbalanced_labels()
    first = class_balanced_splits(labels, 4, seed=0)
    again = class_balanced_splits(labels.copy(), 4, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = class_balanced_splits(labels, 4, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    check_partition(other, labels)


def test_wrapper_serves_its_split_of_an_mmpretrain_dataset():
    labels = imbalanced_labels()
    full = TinyLabelledDataset(labels)
    parts = [ClassBalancedSplitDataset(full, num_splits=3, split=k, seed=5) for k in range(3)]
    check_partition([np.array(part.indices) for part in parts], labels)
    part = parts[1]
    assert len(part) == len(part.indices)
    assert [part[i]['value'] for i in range(len(part))] == part.indices  # item i is sample indices[i]
    assert part.get_gt_labels().tolist() == labels[part.indices].tolist()
    assert part.get_cat_ids(2) == [int(labels[part.indices[2]])]
    assert part.get_data_info(0)['value'] == part.indices[0]
    assert part.metainfo == full.metainfo and part.CLASSES == ('a', 'b', 'c', 'd')
    assert part.class_to_idx == {'a': 0, 'b': 1, 'c': 2, 'd': 3}
    assert 'split 1 of 3' in repr(part)


def test_wrapper_builds_from_a_config_lazily():
    labels = imbalanced_labels(seed=1)
    cfg = dict(type='mmincubation.ClassBalancedSplitDataset', num_splits=4, split=3, seed=0,
               dataset=dict(type='TinyLabelledDataset', labels=labels, lazy_init=True))
    built = DATASETS.build(cfg)  # MMEngine's root registry, as a Runner builds it (default scope mmpretrain)
    assert isinstance(built, ClassBalancedSplitDataset) and isinstance(built.dataset, TinyLabelledDataset)
    assert 'not initialized' in repr(built)
    assert built.indices == class_balanced_splits(labels, 4, seed=0)[3].tolist()  # initialised on first use
    assert len(built.dataset) == len(built)  # the subset is MMEngine's get_subset of the wrapped dataset


def test_wrapper_works_in_a_dataloader():
    labels = imbalanced_labels()
    loader = Runner.build_dataloader(dict(
        batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='mmincubation.ClassBalancedSplitDataset', num_splits=2, split=0,
                     dataset=dict(type='TinyLabelledDataset', labels=labels, pipeline=[dict(type='PackInputs')]))))
    seen = [int(sample.gt_label) for batch in loader for sample in batch['data_samples']]
    assert seen == labels[loader.dataset.indices].tolist()


def test_bad_arguments_are_refused_with_the_reason():
    full = TinyLabelledDataset([0, 1, 1])
    with pytest.raises(ValueError, match='needs num_splits and split.*module index'):
        ClassBalancedSplitDataset(full, num_splits=4)
    with pytest.raises(ValueError, match=r'split must be an integer in \[0, 4\), got 4'):
        ClassBalancedSplitDataset(full, num_splits=4, split=4)
    with pytest.raises(ValueError, match='num_splits must be a positive integer'):
        ClassBalancedSplitDataset(full, num_splits=0, split=0)
    with pytest.raises(TypeError, match='config dict or an mmpretrain BaseDataset, got int'):
        ClassBalancedSplitDataset(42, num_splits=2, split=0)


@pytest.fixture(scope='module')
def fashion_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('fashion_mnist')
    extract_fashion_mnist(DEBIAN_ROOT, root)
    return str(root)


@needs_data
def test_fashion_mnist_splits_into_exactly_balanced_quarters(fashion_root):
    dataset = dict(type='mmincubation.CompressedFashionMNIST', data_root=fashion_root, pipeline=[])
    parts = [DATASETS.build(dict(type='mmincubation.ClassBalancedSplitDataset', dataset=dataset, num_splits=4,
                                 split=k, seed=0)) for k in range(4)]
    labels = DATASETS.build(dataset).get_gt_labels()
    check_partition([np.array(part.indices) for part in parts], labels)
    for part in parts:  # 6000 images per class, so exactly 1500 per class in each quarter
        assert len(part) == 15000 and np.bincount(part.get_gt_labels()).tolist() == [1500] * 10
        assert part.metainfo['classes'][9] == 'Ankle boot'
    item = parts[2][0]
    assert item['gt_label'] == labels[parts[2].indices[0]]


@needs_data
def test_dmt_config_gives_module_k_the_kth_split(fashion_root, tmp_path):
    cfg = Config.fromfile(DMT_CONFIG)
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = fashion_root
    cfg.train_dataloader.dataset.indices = 400
    assert phase_recipe(cfg, 'meta').train_dataloader.dataset.type == 'mmincubation.CompressedFashionMNIST'
    assert phase_recipe(cfg, 'finetune').train_dataloader.dataset.type == 'mmincubation.CompressedFashionMNIST'
    datasets = []
    for module in range(4):
        dataset_cfg = phase_recipe(cfg, 'incubate', module).train_dataloader.dataset
        assert dataset_cfg.type == 'mmincubation.ClassBalancedSplitDataset'
        assert (dataset_cfg.split, dataset_cfg.num_splits, dataset_cfg.seed) == (module, 4, 0)
        datasets.append(DATASETS.build(dataset_cfg))
    labels = DATASETS.build(dataset_cfg.dataset).get_gt_labels()
    assert len(labels) == 400
    check_partition([np.array(dataset.indices) for dataset in datasets], labels)


def test_a_hand_written_wrapper_gets_the_module_index_and_k(tmp_path):
    """Without ``incubation.dmt``, a config's own ClassBalancedSplitDataset is completed per module."""
    cfg = Config.fromfile('configs/incubate_demo_fashion_mnist.py')
    cfg.work_dir = str(tmp_path)
    wrapper = dict(type='mmincubation.ClassBalancedSplitDataset', dataset=cfg.train_dataloader.dataset, seed=3)
    cfg.incubation.incubate.train_dataloader = dict(dataset=dict(_delete_=True, **wrapper))
    for module in range(4):
        dataset_cfg = phase_recipe(cfg, 'incubate', module).train_dataloader.dataset
        assert (dataset_cfg.split, dataset_cfg.num_splits, dataset_cfg.seed) == (module, 4, 3)
        assert dataset_cfg.dataset.type == 'mmincubation.CompressedFashionMNIST'
    pinned = dict(wrapper, split=1, num_splits=2)
    cfg.incubation.incubate.train_dataloader = dict(dataset=dict(_delete_=True, **pinned))
    dataset_cfg = phase_recipe(cfg, 'incubate', 3).train_dataloader.dataset
    assert (dataset_cfg.split, dataset_cfg.num_splits) == (1, 2)  # explicit values are kept


def test_dmt_refuses_a_missing_or_already_wrapped_training_set(tmp_path):
    cfg = Config.fromfile(DMT_CONFIG)
    cfg.work_dir = str(tmp_path)
    wrapped = copy.deepcopy(cfg)
    wrapped.incubation.incubate.train_dataloader = dict(dataset=dict(
        type='mmincubation.ClassBalancedSplitDataset', dataset=cfg.train_dataloader.dataset))
    with pytest.raises(ValueError, match='incubation.dmt .* not wrapped already'):
        phase_recipe(wrapped, 'incubate', 0)
    cfg.train_dataloader = None
    with pytest.raises(ValueError, match='incubation.dmt .* got None'):
        phase_recipe(cfg, 'incubate', 0)
