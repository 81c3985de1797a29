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

from collections.abc import Sequence

import numpy as np
from mmengine.dataset import force_full_init
from mmpretrain.datasets import BaseDataset, KFoldDataset
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS

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


@DATASETS.register_module()
class ClassBalancedSplitDataset(KFoldDataset):
    """Split ``split`` of ``num_splits`` disjoint, class-balanced parts of ``dataset``.

    mmpretrain's ``KFoldDataset`` with its test fold as the part, chosen class-balanced
    (:func:`class_balanced_splits`) instead of as a contiguous range of shuffled indices; the subset
    itself is MMEngine's ``BaseDataset.get_subset``, and everything else (``__getitem__``, labels,
    metainfo) is ``KFoldDataset``'s. The parts depend only on the labels and ``seed``, so K machines
    building the same config with different ``split`` get complementary subsets without communicating.

    Args:
        dataset: the dataset to split, as a config dict (``lazy_init`` inside it defers loading, as for
            ``KFoldDataset``) or an mmpretrain ``BaseDataset`` object.
        num_splits: number of parts K.
        split: which part, ``0 <= split < num_splits``.
        seed: seed of the per-class shuffles; the same seed gives the same partition everywhere.

    Raises:
        ValueError: ``num_splits`` / ``split`` missing or out of range.
        TypeError: ``dataset`` is neither a config dict nor a ``BaseDataset``.
    """

    def __init__(self, dataset, num_splits: int | None = None, split: int | None = None, seed: int = 0) -> None:
        if num_splits is None or split is None:
            raise ValueError(
                f'ClassBalancedSplitDataset needs num_splits and split, got num_splits={num_splits}, split={split}; '
                'in an incubation config the incubate phase fills them with K and the module index')
        if int(num_splits) != num_splits or num_splits < 1:
            raise ValueError(f'num_splits must be a positive integer, got {num_splits!r}')
        if int(split) != split or not 0 <= split < num_splits:
            raise ValueError(f'split must be an integer in [0, {num_splits}), got {split!r}')
        if isinstance(dataset, dict):
            lazy_init = dataset.get('lazy_init', False)
            dataset = MMPRETRAIN_DATASETS.build(dataset)  # its own types by plain name, ours as 'mmincubation.X'
        elif isinstance(dataset, BaseDataset):
            lazy_init = False
        else:
            raise TypeError(f'dataset must be a config dict or an mmpretrain BaseDataset, got {type(dataset).__name__}')
        # KFoldDataset.__init__ itself is not called: in mmpretrain 1.2.0 it fails on dataset objects
        # (`lazy_init` unbound); these are the attributes it sets.
        self.dataset, self._metainfo = dataset, getattr(dataset, 'metainfo', {})
        self.fold, self.num_splits, self.test_mode, self.seed = int(split), int(num_splits), True, seed
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        self.dataset.full_init()
        self._ori_indices = class_balanced_splits(self.dataset.get_gt_labels(), self.num_splits, self.seed)[
            self.fold].tolist()
        self.dataset = self.dataset.get_subset(self._ori_indices)
        self._fully_initialized = True

    @property
    def split(self) -> int:
        return self.fold

    @property
    @force_full_init
    def indices(self) -> list[int]:
        """Indices into the wrapped dataset of this split's samples, in increasing order."""
        return list(self._ori_indices)

    def __repr__(self) -> str:
        size = len(self) if self._fully_initialized else 'not initialized'
        return (f'{type(self).__name__}(split {self.split} of {self.num_splits}, seed={self.seed}, '
                f'samples={size}, dataset={type(self.dataset).__name__})')
