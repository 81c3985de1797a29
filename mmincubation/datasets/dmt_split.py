"""Class-balanced K-way split of a dataset, for decentralized modular training (DMT).

In the paper's decentralized setting (supplementary material) the K modules are incubated by K
parties that each hold only their own share of the data: module k sees split k of K disjoint,
class-balanced parts of the training set. :class:`ClassBalancedSplitDataset` wraps any mmpretrain
dataset and exposes one such part::

    train_dataloader = dict(dataset=dict(
        type='mmincubation.ClassBalancedSplitDataset',
        dataset=dict(type='ImageNet', data_root='data/imagenet', split='train', pipeline=...),
        num_splits=4, split=2, seed=0))

In an incubation pipeline config, put the wrapper in ``incubation.incubate.train_dataloader`` with
``split=None`` (and ``num_splits=None`` if you like): the phase config of module k fills in
``split=k`` and ``num_splits=K`` (see ``configs/incubate_demo_fashion_mnist_dmt.py``).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from mmengine.dataset import force_full_init

from ..registry import DATASETS


def class_balanced_splits(labels: Sequence[int] | np.ndarray, num_splits: int, seed: int = 0) -> list[np.ndarray]:
    """Partition ``range(len(labels))`` into ``num_splits`` disjoint, class-balanced index arrays.

    Per class (in increasing label order) the class's indices are shuffled with one generator seeded
    by ``seed`` and dealt round-robin to the splits. Dealing continues where the previous class
    stopped, so every class's count differs by at most one between splits, and so do the split sizes.
    Each returned array is sorted.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f'expected one label per sample, got labels of shape {labels.shape}')
    if int(num_splits) != num_splits or num_splits < 1:
        raise ValueError(f'num_splits must be a positive integer, got {num_splits!r}')
    num_splits = int(num_splits)
    rng = np.random.default_rng(seed)
    assigned = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assigned[members] = (start + np.arange(len(members))) % num_splits
        start = (start + len(members)) % num_splits
    return [np.flatnonzero(assigned == split) for split in range(num_splits)]


def _build_dataset(dataset):
    if isinstance(dataset, dict):
        # mmpretrain's registry finds its own types by plain name and ours as 'mmincubation.X'.
        from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
        return MMPRETRAIN_DATASETS.build(dataset)
    if hasattr(dataset, '__getitem__') and hasattr(dataset, '__len__'):
        return dataset
    raise TypeError(f'dataset must be a config dict or a dataset object, got {type(dataset).__name__}')


@DATASETS.register_module()
class ClassBalancedSplitDataset:
    """Split ``split`` of ``num_splits`` disjoint, class-balanced parts of ``dataset``.

    The parts depend only on the labels and ``seed`` (see :func:`class_balanced_splits`), so K
    machines building the same config with different ``split`` get complementary subsets without
    communicating. Labels come from the wrapped dataset's ``get_gt_labels()`` (mmpretrain datasets)
    or else ``get_cat_ids(i)``, which must give one category per sample.

    Args:
        dataset: the dataset to split, as a config dict or an object (an mmpretrain/MMEngine dataset
            or another wrapper).
        num_splits: number of parts K.
        split: which part, ``0 <= split < num_splits``.
        seed: seed of the per-class shuffles; the same seed gives the same partition everywhere.
        lazy_init: defer loading annotations until first use (as MMEngine's wrappers do).
    """

    def __init__(self, dataset, num_splits: int | None = None, split: int | None = None, seed: int = 0,
                 lazy_init: bool = False) -> None:
        if num_splits is None or split is None:
            raise ValueError(
                f'ClassBalancedSplitDataset needs num_splits and split, got num_splits={num_splits}, split={split}; '
                'in an incubation config the incubate phase fills them with K and the module index')
        if int(num_splits) != num_splits or num_splits < 1:
            raise ValueError(f'num_splits must be a positive integer, got {num_splits!r}')
        if int(split) != split or not 0 <= split < num_splits:
            raise ValueError(f'split must be an integer in [0, {num_splits}), got {split!r}')
        self.dataset = _build_dataset(dataset)
        self.num_splits = int(num_splits)
        self.split = int(split)
        self.seed = seed
        self._metainfo = copy.deepcopy(getattr(self.dataset, 'metainfo', {}))
        self._indices: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's meta information (a copy)."""
        return copy.deepcopy(self._metainfo)

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        labels = self._all_labels()
        self._indices = class_balanced_splits(labels, self.num_splits, self.seed)[self.split]
        self._labels = labels[self._indices]
        self._fully_initialized = True

    def _all_labels(self) -> np.ndarray:
        if hasattr(self.dataset, 'get_gt_labels'):
            return np.asarray(self.dataset.get_gt_labels())
        labels = []
        for idx in range(len(self.dataset)):
            cat_ids = list(self.dataset.get_cat_ids(idx))
            if len(cat_ids) != 1:
                raise ValueError(f'sample {idx} has categories {cat_ids}: a class-balanced split needs exactly one '
                                 'category per sample')
            labels.append(cat_ids[0])
        return np.asarray(labels, dtype=np.int64)

    @property
    @force_full_init
    def indices(self) -> list[int]:
        """Indices into the wrapped dataset of this split's samples, in increasing order."""
        return self._indices.tolist()

    @force_full_init
    def _ori_index(self, idx: int) -> int:
        return int(self._indices[idx])

    @force_full_init
    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, idx: int):
        return self.dataset[self._ori_index(idx)]

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(self._ori_index(idx))

    def get_cat_ids(self, idx: int) -> list[int]:
        return self.dataset.get_cat_ids(self._ori_index(idx))

    @force_full_init
    def get_gt_labels(self) -> np.ndarray:
        return self._labels.copy()

    @property
    def CLASSES(self):  # noqa: N802  (mmpretrain's name)
        return self._metainfo.get('classes')

    @property
    def class_to_idx(self) -> dict:
        return {name: index for index, name in enumerate(self.CLASSES or ())}

    def __repr__(self) -> str:
        size = len(self) if self._fully_initialized else 'not initialized'
        return (f'{type(self).__name__}(split {self.split} of {self.num_splits}, seed={self.seed}, '
                f'samples={size}, dataset={type(self.dataset).__name__})')
