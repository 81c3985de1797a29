"""mmpretrain's ``VisionTransformer`` with the initialisation of timm's ViT (DeiT, official Deep Incubation)."""
from __future__ import annotations

from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models import VisionTransformer
from torch import nn

from ..registry import MODELS


@MODELS.register_module()
class TimmInitVisionTransformer(VisionTransformer):
    """``mmpretrain.VisionTransformer``, same network and state-dict keys, initialised as timm's.

    timm's ViT (that of the official runs) draws every ``Linear`` weight and the class token from a
    truncated normal of std 0.02 (bounds +-2 absolute, as MMEngine's ``trunc_normal_``: in effect a
    normal of std 0.02) and zeroes every ``Linear`` bias; the position embedding likewise, which
    mmpretrain already does. mmpretrain's ``TransformerEncoderLayer.init_weights`` instead gives the
    FFN weights Xavier-uniform (std ``sqrt(2 / (d + 4d))``: 0.046 at width 192, 0.023 at 768) and
    biases N(0, 1e-6), and leaves the class token at zero; an ``init_cfg`` cannot change that because
    MMEngine initialises children after their parent's ``init_cfg``. So this class re-applies timm's
    rule after the usual initialisation (unless ``init_cfg`` loads a ``Pretrained`` checkpoint).

    Checkpoints are plain ``VisionTransformer`` ones: stock mmpretrain / mmdet / mmseg configs load them.
    """

    def init_weights(self) -> None:
        already_initialised = self._is_init
        super().init_weights()
        init_cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        if already_initialised or any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in init_cfgs):
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=.02)
