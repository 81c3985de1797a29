"""Layer-wise learning-rate decay for detectors and segmentors with an mmpretrain ViT backbone.

mmdet keeps ViTDet's constructor in ``projects/`` (not installed) and mmseg's
``LayerDecayOptimizerConstructor`` only knows BEiT/MAE/ConvNeXt parameter names, so configs of
``configs/downstream/`` use this one: ``constructor='mmincubation.LayerDecayOptimWrapperConstructor'``
works whatever the config's ``default_scope``.
"""
from __future__ import annotations

import re

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor with BEiT/ViTDet layer-wise LR decay on ``backbone.layers.N``.

    Layer ids: the stem (``patch_embed``, ``cls_token``, ``pos_embed``, ``pre_norm``) is 0, block
    ``backbone.layers.N`` is ``N + 1`` and everything else (``backbone.ln1``, neck, heads) is
    ``num_layers + 1``. A parameter's learning rate is
    ``lr * layer_decay_rate ** (num_layers + 1 - layer_id)``, so the heads keep the base LR.
    One-dimensional parameters (norms, biases) and the names in ``no_decay_names`` get no weight decay.

    ``paramwise_cfg`` keys:
        layer_decay_rate (float): required.
        num_layers (int, optional): blocks of the ViT; checked against the model, inferred if omitted.
        backbone_prefix (str): defaults to ``'backbone.'``.
        no_decay_names (Sequence[str]): parameter names (last part of the dotted name) without weight
            decay whatever their shape; defaults to ``('pos_embed', 'cls_token')``.
    Parameters with ``requires_grad=False`` are left out. Groups are formed per (layer, decay).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        if 'layer_decay_rate' not in paramwise_cfg:
            raise ValueError('LayerDecayOptimWrapperConstructor needs paramwise_cfg.layer_decay_rate')
        self.layer_decay_rate = float(paramwise_cfg.pop('layer_decay_rate'))
        self.num_layers = paramwise_cfg.pop('num_layers', None)
        self.backbone_prefix = paramwise_cfg.pop('backbone_prefix', 'backbone.')
        self.no_decay_names = tuple(paramwise_cfg.pop('no_decay_names', ('pos_embed', 'cls_token')))
        if paramwise_cfg:
            raise ValueError(f'LayerDecayOptimWrapperConstructor does not support paramwise_cfg keys '
                             f'{sorted(paramwise_cfg)}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg=None)
        # A non-empty paramwise_cfg makes the default __call__ go through add_params.
        self.paramwise_cfg = dict(layer_decay_rate=self.layer_decay_rate, num_layers=self.num_layers)

    def _count_layers(self, model: nn.Module) -> int:
        pattern = re.compile(rf'^{re.escape(self.backbone_prefix)}layers\.(\d+)\.')
        ids = {int(m.group(1)) for name, _ in model.named_parameters() if (m := pattern.match(name))}
        if not ids:
            raise ValueError(f'the model has no parameter named {self.backbone_prefix}layers.N.*: '
                             'layer-wise decay needs an mmpretrain VisionTransformer backbone')
        return max(ids) + 1

    def layer_id(self, name: str, num_layers: int) -> int:
        """Layer id of the parameter called ``name`` in the (unwrapped) model."""
        if not name.startswith(self.backbone_prefix):
            return num_layers + 1
        name = name[len(self.backbone_prefix):]
        if name in ('cls_token', 'pos_embed') or name.startswith(('patch_embed.', 'pre_norm.')):
            return 0
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1
        return num_layers + 1

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '', **kwargs) -> None:
        if is_model_wrapper(module):
            module = module.module
        num_layers = self._count_layers(module)
        if self.num_layers is not None and self.num_layers != num_layers:
            raise ValueError(f'paramwise_cfg.num_layers={self.num_layers} but the backbone has {num_layers} '
                             f'layers ({self.backbone_prefix}layers.N)')
        groups: dict[tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = self.layer_id(name, num_layers)
            no_decay = param.ndim == 1 or name.split('.')[-1] in self.no_decay_names
            if (layer_id, no_decay) not in groups:
                scale = self.layer_decay_rate ** (num_layers + 1 - layer_id)
                group = dict(params=[], lr=self.base_lr * scale, lr_scale=scale, layer_id=layer_id)
                if no_decay or self.base_wd is not None:  # else the optimizer's default decay
                    group['weight_decay'] = 0. if no_decay else self.base_wd
                groups[layer_id, no_decay] = group
            groups[layer_id, no_decay]['params'].append(param)
        for key in sorted(groups):
            group = groups[key]
            print_log(f'layer decay: layer {key[0]}, lr_scale {group["lr_scale"]:.4g}, weight_decay '
                      f'{group.get("weight_decay", "default")}: {len(group["params"])} params', logger='current')
        params.extend(groups[key] for key in sorted(groups))
