"""Layer-wise learning-rate decay for detectors and segmentors with an mmpretrain ViT backbone.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` does the work (BEiT/ViTDet decay, weight-decay
multipliers) but asks the *model* for ``get_layer_depth``, which an mmdet detector or mmseg segmentor does
not have; its ViT backbone does. This subclass hands it the backbone's own
``VisionTransformer.get_layer_depth(name, prefix='backbone.')`` and the decay defaults of our configs, so
``constructor='mmincubation.LayerDecayOptimWrapperConstructor'`` works whatever the config's
``default_scope``. (mmdet keeps ViTDet's constructor in ``projects/``, not installed; mmseg's
``LayerDecayOptimizerConstructor`` only knows BEiT/MAE/ConvNeXt parameter names.)
"""
from __future__ import annotations

import functools

from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
from torch import nn

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS

#: Weight decay multipliers unless ``paramwise_cfg`` sets its own: none for one-dimensional parameters
#: (norms, biases), the class token and the position embedding (BEiT/MAE/ViTDet).
NO_DECAY = dict(flat_decay_mult=0., custom_keys={'.cls_token': dict(decay_mult=0.), '.pos_embed': dict(decay_mult=0.)})


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-wise LR decay with the depth of ``model.backbone`` (an mmpretrain ViT).

    Depths (mmpretrain's ``VisionTransformer.get_layer_depth``): the stem (``patch_embed``, ``cls_token``,
    ``pos_embed``) is 0, block ``backbone.layers.N`` is ``N + 1`` and everything else (final norm, neck,
    heads) is ``num_layers + 1``; a parameter's learning rate is
    ``lr * layer_decay_rate ** (num_layers + 1 - depth)``, so the heads keep the base LR.

    ``paramwise_cfg`` keys: ``layer_decay_rate`` (required), ``num_layers`` (optional: the ViT's blocks,
    checked against the model) and mmpretrain's weight-decay keys, by default :data:`NO_DECAY`
    (``flat_decay_mult`` and ``custom_keys`` replace it as a whole). Parameters with ``requires_grad=False``
    are left out.

    Raises:
        ValueError: without ``layer_decay_rate``; when the model has no ``backbone`` with
            ``get_layer_depth``; when ``num_layers`` differs from the backbone's.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        if 'layer_decay_rate' not in paramwise_cfg:
            raise ValueError('LayerDecayOptimWrapperConstructor needs paramwise_cfg.layer_decay_rate')
        self.num_layers = paramwise_cfg.pop('num_layers', None)
        if not {'flat_decay_mult', 'custom_keys'} & set(paramwise_cfg):
            paramwise_cfg.update(NO_DECAY)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '', get_layer_depth=None,
                   **kwargs) -> None:
        if get_layer_depth is None:  # the call on the whole (unwrapped) model
            backbone = getattr(module, 'backbone', None)
            if not hasattr(backbone, 'get_layer_depth'):
                raise ValueError(f'layer-wise LR decay needs model.backbone with get_layer_depth (an mmpretrain '
                                 f'VisionTransformer); {type(module).__name__} has {type(backbone).__name__}')
            if self.num_layers is not None and self.num_layers != backbone.num_layers:
                raise ValueError(f'paramwise_cfg.num_layers={self.num_layers} but the backbone has '
                                 f'{backbone.num_layers} layers (backbone.layers.N)')
            get_layer_depth = functools.partial(backbone.get_layer_depth, prefix='backbone.')
        super().add_params(params, module, prefix, get_layer_depth=get_layer_depth, **kwargs)
