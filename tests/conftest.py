"""Shared fixtures: tiny ViT classifiers in mmpretrain's naming."""
from __future__ import annotations

import pytest
import torch
from mmengine.registry import init_default_scope

import mmincubation  # noqa: F401

WIDTH = 16


def tiny_classifier_cfg(num_layers: int, **extra) -> dict:
    """An mmpretrain ImageClassifier config with a ViT of ``num_layers`` blocks (16x16 images)."""
    backbone = dict(type='VisionTransformer', img_size=16, patch_size=8, in_channels=1,
                    arch=dict(embed_dims=WIDTH, num_layers=num_layers, num_heads=2, feedforward_channels=32))
    cfg = dict(type='ImageClassifier', backbone=backbone, neck=None,
               head=dict(type='VisionTransformerClsHead', num_classes=3, in_channels=WIDTH,
                         init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)))
    cfg.update(extra)
    return cfg


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
