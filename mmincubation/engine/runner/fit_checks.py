"""Checks that a checkpoint fits the model a config builds, before any training or evaluation starts.

MMEngine's ``load_from`` and ``init_cfg=dict(type='Pretrained')`` load non-strictly: keys that do not
fit are only logged, and training or evaluation goes on from random tensors. These checks build the
model on the meta device (no memory, even for ViT-H) and compare keys and shapes first.
"""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from ...checkpoint import CheckpointError, load_fitting

#: Backbone tensors that the backbone itself resizes when loading (mmpretrain's VisionTransformer
#: interpolates its position embedding to the configured input size).
RESIZED_ON_LOAD = ('pos_embed', )


def full_model_shapes(cfg: Config) -> dict:
    """State-dict tensors of ``cfg.model``, built on the meta device in the config's default scope."""
    import torch
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')), torch.device('meta'):
        model = MODELS.build(cfg.model)
    return dict(model.state_dict())


def check_pretrained_backbone(cfg: Config) -> None:
    """Refuse a ``model.backbone.init_cfg`` of type ``Pretrained`` whose checkpoint does not fit the backbone.

    Raises:
        CheckpointError: naming the file when it is missing (with the setting to change), unreadable,
            a single module / meta model / hybrid (by its mmincubation tag), or its keys under the
            init_cfg's ``prefix`` miss, add to or mis-shape the backbone's (``pos_embed`` may differ
            in size: the ViT interpolates it).
    """
    backbone = cfg.model.get('backbone') or {}
    init_cfg = backbone.get('init_cfg')
    if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained' or not init_cfg.get('checkpoint'):
        return
    path = Path(init_cfg['checkpoint'])
    if not path.exists():
        raise CheckpointError(
            f'model.backbone.init_cfg.checkpoint {path} does not exist (looked for it from {Path.cwd()}); set '
            'INCUBATED_CHECKPOINT=path/to/checkpoint.pth (downstream configs) or --cfg-options '
            'model.backbone.init_cfg.checkpoint=path/to/checkpoint.pth')
    shapes = full_model_shapes(cfg)
    reference = {key[len('backbone.'):]: value for key, value in shapes.items() if key.startswith('backbone.')}
    load_fitting(init_cfg['checkpoint'], reference, holds='full', prefix=init_cfg.get('prefix', ''),
                 resizable=RESIZED_ON_LOAD)
