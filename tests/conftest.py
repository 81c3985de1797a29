"""Shared fixtures and helpers: tiny ViT classifiers in mmpretrain's naming, a one-box mmdet sample."""
from __future__ import annotations

import os

# As the tools (tools/train.py): OpenMP threads wait passively, set before torch is imported.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import copy  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import mmincubation  # noqa: F401, E402

WIDTH = 16
ROOT = Path(__file__).resolve().parents[1]

# The tiny pipeline of the bug reports (../shared/cases/tiny_case.py): the demo config at 4 blocks of width 32,
# K=2 modules of 2 blocks, ``epochs`` per phase of ``indices`` / 32 iterations, drop path in every phase but meta.
TINY_PIPELINE = '''
_base_ = ['{root}/configs/incubate_demo_fashion_mnist.py']
model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=4, num_heads=2,
                                     feedforward_channels=64)), head=dict(in_channels=32))
train_dataloader = dict(batch_size=32, dataset=dict(indices={indices}, data_root='{data}'))
val_dataloader = dict(batch_size=128, dataset=dict(indices=128, data_root='{data}'))
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(type='LoggerHook', interval=4))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
                   dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=4)]
incubation = dict(
    _delete_=True,
    num_modules=2,
    meta=dict(train_cfg=dict(max_epochs={epochs})),
    incubate=dict(train_cfg=dict(max_epochs={epochs}), model=dict(backbone=dict(drop_path_rate={drop_path}))),
    finetune=dict(train_cfg=dict(max_epochs={epochs}), model=dict(backbone=dict(drop_path_rate={drop_path})),
                  param_scheduler=[dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=0)]),
    e2e=dict(train_cfg=dict(max_epochs={epochs}), model=dict(backbone=dict(drop_path_rate={drop_path}))),
)
'''


def tiny_pipeline(data_root: str, indices: int, epochs: int, drop_path: float) -> str:
    """The text of :data:`TINY_PIPELINE` for the Fashion-MNIST copy at ``data_root``."""
    return TINY_PIPELINE.format(root=ROOT, data=data_root, indices=indices, epochs=epochs, drop_path=drop_path)


def tiny_classifier_cfg(num_layers: int, **extra) -> dict:
    """An mmpretrain ImageClassifier config with a ViT of ``num_layers`` blocks (16x16 images)."""
    backbone = dict(type='VisionTransformer', img_size=16, patch_size=8, in_channels=1,
                    arch=dict(embed_dims=WIDTH, num_layers=num_layers, num_heads=2, feedforward_channels=32))
    cfg = dict(type='ImageClassifier', backbone=backbone, neck=None,
               head=dict(type='VisionTransformerClsHead', num_classes=3, in_channels=WIDTH,
                         init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)))
    cfg.update(extra)
    return cfg


def det_sample_64():
    """An mmdet ``DetDataSample`` of a 64x64 image with one box (label 1) and its mask, for a training step."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64),
                                         scale_factor=(1., 1.), batch_input_shape=(64, 64)))
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 8:40] = 1
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[8., 8., 40., 40.]]), labels=torch.tensor([1]),
                                       masks=BitmapMasks(masks.numpy(), 64, 64))
    return sample


@pytest.fixture(scope='module')
def load(tmp_path_factory):
    """Config.fromfile, once per file, with a temporary work dir; callers get their own copy."""
    work_dir = tmp_path_factory.mktemp('work_dirs')
    cache = {}

    def _load(path: Path) -> Config:
        if path not in cache:
            cfg = Config.fromfile(str(path))
            cfg.work_dir = str(work_dir / path.stem)
            cache[path] = cfg
        return copy.deepcopy(cache[path])

    return _load


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module of tiny models: ten times faster than two contending with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def data_root(tmp_path_factory) -> str:
    """Fashion-MNIST extracted once per test session (needs Debian's dataset-fashion-mnist)."""
    from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT, extract_fashion_mnist
    root = tmp_path_factory.mktemp('fashion_mnist')
    extract_fashion_mnist(DEBIAN_ROOT, root)
    return str(root)


@pytest.fixture(scope='session')
def tiny_work_dir(tmp_path_factory, data_root) -> Path:
    """The work dir of :data:`TINY_PIPELINE` (256 images, 1 epoch per phase, no drop path) run once per session by
    ``tools/train.py`` in a fresh process: meta, 2 module incubations, assembly and fine-tune (no E2E), with the
    phases' dumped configs (``meta/tiny.py``, ...); the pipeline config is ``tiny.py`` beside it. Read it, never
    write into it: other tests share it."""
    root = tmp_path_factory.mktemp('tiny_pipeline')
    (root / 'tiny.py').write_text(tiny_pipeline(data_root, indices=256, epochs=1, drop_path=0.0))
    result = subprocess.run([sys.executable, 'tools/train.py', str(root / 'tiny.py'), '--work-dir', str(root / 'work')],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return root / 'work'


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
