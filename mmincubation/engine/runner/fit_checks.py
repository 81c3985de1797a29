"""Checks that a checkpoint fits the model a config builds, before any training or evaluation starts.

MMEngine's ``load_from`` and ``init_cfg=dict(type='Pretrained')`` load non-strictly: keys that do not
fit are only logged, and training or evaluation goes on from random tensors. These checks build the
model on the meta device (no memory, even for ViT-H) and compare keys and shapes first.
"""
from __future__ import annotations

import os
from pathlib import Path

from mmengine.config import Config

from ...backbones import loading_spec
from ...checkpoint import CheckpointError, load_fitting
from ...models.channel_inflation import InflatingVisionTransformer, inflatable


def build_on_meta(cfg: Config):
    """``cfg.model`` built on the meta device (no memory) in the config's default scope.

    mmpretrain's ``SwinTransformer`` reads its stochastic-depth rates with ``torch.linspace(...)[i].item()``,
    which a meta tensor cannot give: ``linspace`` alone computes on the CPU while the model is built.
    """
    import functools
    from unittest import mock

    import torch
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cpu_linspace = functools.partial(torch.linspace, device='cpu')
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')), torch.device('meta'), \
            mock.patch.object(torch, 'linspace', cpu_linspace):
        return MODELS.build(cfg.model)


def full_model_shapes(cfg: Config) -> dict:
    """State-dict tensors of ``cfg.model``, built on the meta device in the config's default scope."""
    return dict(build_on_meta(cfg).state_dict())


def check_pretrained_backbone(cfg: Config) -> None:
    """Refuse a ``model.backbone.init_cfg`` of type ``Pretrained`` whose checkpoint does not fit the backbone.

    ``cfg`` must have its settings filled in (:func:`mmincubation.engine.downstream.resolve_settings`).
    A checkpoint of another number of image channels fits an
    :class:`~mmincubation.models.channel_inflation.InflatingVisionTransformer` when one side has 1 channel.

    Raises:
        CheckpointError: naming the file when it is missing (with the settings to change), unreadable,
            a single module / meta model / hybrid (by its mmincubation tag), or its keys under the
            init_cfg's ``prefix`` miss, add to or mis-shape the backbone's (``pos_embed`` may differ
            in size: the ViT interpolates it; the file may have the keys its spec's ``unused_on_load`` names,
            EVA-02's ``ln2``), or its patch embedding takes other image channels than
            the backbone and the backbone does not inflate them (or cannot: neither side has 1 channel).
    """
    backbone = cfg.model.get('backbone') or {}
    init_cfg = backbone.get('init_cfg')
    if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained' or not init_cfg.get('checkpoint'):
        return
    path = Path(init_cfg['checkpoint'])
    if not path.exists():
        raise CheckpointError(
            f'model.backbone.init_cfg.checkpoint {os.path.normpath(path)} does not exist'
            + ('' if path.is_absolute() else f' (relative to the working directory {Path.cwd()})')
            + '; set INCUBATED_CHECKPOINT=path/to/checkpoint.pth or --cfg-options checkpoint=path/to/checkpoint.pth '
            '(configs/downstream), else --cfg-options model.backbone.init_cfg.checkpoint=path/to/checkpoint.pth')
    model = build_on_meta(cfg)
    reference = {key[len('backbone.'):]: value for key, value in model.state_dict().items()
                 if key.startswith('backbone.')}
    # what the backbone resizes, adds or inflates on load (its spec's; a backbone without a spec: nothing)
    spec = loading_spec(type(model.backbone))
    patch_weight = spec.patch_weight if spec else None
    checkpoint = load_fitting(init_cfg['checkpoint'], reference, holds='full', prefix=init_cfg.get('prefix', ''),
                              resizable=(spec.resized_on_load + ((patch_weight, ) if patch_weight else ())) if spec
                              else (), optional=spec.added_on_load if spec else (),
                              unused=spec.unused_on_load if spec else ())
    weight = checkpoint['state_dict'].get(init_cfg.get('prefix', '') + str(patch_weight))
    if weight is None or patch_weight not in reference:
        return
    expected = tuple(reference[patch_weight].shape)
    if tuple(weight.shape[:1] + weight.shape[2:]) != expected[:1] + expected[2:]:  # only the channels may differ
        width, patch_size = spec.patch_settings
        raise CheckpointError(f'checkpoint {path}: the patch embedding ({patch_weight}) has shape '
                              f'{tuple(weight.shape)}, the backbone {expected}: another width or patch size '
                              f'(model.backbone.{width}, model.backbone.{patch_size})')
    have, want = weight.shape[1], expected[1]
    if have == want or (isinstance(model.backbone, InflatingVisionTransformer) and inflatable(have, want)):
        return
    hint = ('only 1 <-> C channels can be inflated' if not inflatable(have, want) else
            "set model.backbone.type='mmincubation.InflatingVisionTransformer' to inflate it (averaged "
            f'over the channels) or in_channels={have}')
    raise CheckpointError(f'checkpoint {path}: the patch embedding ({patch_weight}) takes {have} image channels, '
                          f'the backbone {want} (model.backbone.in_channels): {hint}')
