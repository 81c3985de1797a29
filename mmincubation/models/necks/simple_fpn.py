"""A ViTDet-style simple feature pyramid for plain (single-scale) ViT backbones.

Li et al., *Exploring Plain Vision Transformer Backbones for Object Detection* (ECCV 2022): the
last feature map of a plain ViT (stride 16) is turned into strides 4, 8, 16 and 32 by two
deconvolutions, one deconvolution, the identity and a 2x2 max-pool; each level then gets a 1x1 and
a 3x3 convolution with a channel LayerNorm, and an optional extra level (stride 64) is a stride-2
subsampling of the last one. mmdet keeps its version in ``projects/`` (not installed with the
package), so this is a small self-contained one, registered as ``mmincubation.SimpleFPN`` and
usable from mmdet and mmseg configs alike. Its channel LayerNorm is mmpretrain's ``LN2d``
(``mmpretrain.models.utils.LayerNorm2d``, contiguous output as mmcv's RoIAlign kernels need), which
heads take as ``norm_cfg=dict(type='mmpretrain.LN2d')``.
"""
from __future__ import annotations

from collections.abc import Sequence

import mmpretrain.models.utils  # noqa: F401  (registers mmpretrain.LN2d)
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import nn

from ...registry import MODELS


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """Simple feature pyramid on one feature map of a plain ViT.

    Args:
        in_channels (int): Channels of the backbone feature map (the ViT's ``embed_dims``).
        out_channels (int): Channels of every output level.
        scale_factors (Sequence[float]): One output level per factor, relative to the reference
            stride ``base_stride``: 4 and 2 are deconvolutions, 1 the identity, 0.5 a 2x2 max-pool.
            Defaults to ViTDet's ``(4, 2, 1, 0.5)``: strides 4, 8, 16, 32.
        num_outs (int): Number of outputs; levels beyond ``len(scale_factors)`` are stride-2
            subsamplings of the previous one (ViTDet's ``LastLevelMaxPool``). Defaults to 5.
        in_index (int): Which map of the backbone's tuple to use. Defaults to -1 (the last).
        in_stride (int): Stride of the backbone map (its patch size). Defaults to 16.
        base_stride (int): Reference stride of the pyramid. When ``in_stride`` differs (ViT-H/14),
            the map is first resampled onto the ``base_stride`` grid (see below), so the outputs keep
            strides 4, 8, 16, 32(, 64) for the anchors and RoI extractors. ``in_stride`` must not be
            larger than ``base_stride``. Defaults to 16.
        norm_cfg (dict): Norm after every convolution and between the two deconvolutions.
            Defaults to mmpretrain's channel LayerNorm, ``dict(type='mmpretrain.LN2d', eps=1e-6)``.
        act_cfg (dict): Activation between the two deconvolutions. Defaults to GELU.
        init_cfg (dict | list[dict], optional): Defaults to Caffe2-Xavier-like uniform Kaiming.

    Shapes: the backbone map ``(N, C, n_h, n_w)`` gives level ``k`` of shape
    ``(N, out_channels, m_h * scale_factors[k], m_w * scale_factors[k])`` (the 0.5 level rounds down,
    the extra levels, stride-2 subsamplings, round up), where ``m = n`` if ``in_stride == base_stride`` and otherwise
    ``m = floor(in_stride * (n - 1) / base_stride) + 1``.

    Resampling ``in_stride != base_stride`` (ViTDet, Li et al. ECCV 2022, uses 16 px patches and never
    resamples; this is for backbones such as ViT-H/14 whose patch embedding cannot be changed): token
    ``i`` of the map covers pixels ``[s*i, s*(i+1))`` of the input (``s = in_stride``; mmpretrain's
    PatchEmbed pads the image bottom/right to a multiple of ``s``), so its centre is pixel ``s*i + s/2``.
    Anchors and RoIAlign (``aligned=True``, spatial scale ``1/b``, ``b = base_stride``) take cell ``j``
    of the stride-``b`` level to be centred on pixel ``b*j + b/2``. Cell ``j`` therefore gets the
    bilinear interpolation of the token map at that pixel, i.e. at the fractional token index
    ``(b*j + b/2 - s/2) / s`` (``F.grid_sample`` with exact coordinates; positions past the last token
    centre, only possible for input sizes that are not multiples of ``b``, take the border value).
    The cell count is exact when the (padded) input size ``H`` is a multiple of ``b``, as mmdet's data
    preprocessors make it (``pad_size_divisor=32``, ``BatchFixedSizePad``): ``n = ceil(H / s)`` gives
    ``s*(n-1) < H <= s*n``, an interval of length ``s <= b`` that holds exactly one multiple of ``b``,
    ``H = b*m`` with ``m = floor(s*(n-1)/b) + 1``. For ``s > b`` several ``H`` fit one ``n`` (e.g.
    ``s=32, b=16``: ``H = 32n - 16`` or ``32n``), so that is refused. ``in_stride == base_stride``
    leaves the map untouched.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 in_index: int = -1,
                 in_stride: int = 16,
                 base_stride: int = 16,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 init_cfg: dict | list | None = None) -> None:
        if init_cfg is None:
            init_cfg = dict(type='Kaiming', layer=['Conv2d', 'ConvTranspose2d'], a=1, mode='fan_in',
                            nonlinearity='leaky_relu', distribution='uniform')
        super().__init__(init_cfg=init_cfg)
        if in_stride > base_stride:
            raise ValueError(f'in_stride={in_stride} > base_stride={base_stride}: the number of stride-'
                             f'{base_stride} cells of the input is ambiguous from the number of '
                             f'{in_stride} px tokens; use a backbone stride <= base_stride')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} is fewer than the {len(scale_factors)} scale factors')
        norm_cfg = norm_cfg if norm_cfg is not None else dict(type='mmpretrain.LN2d', eps=1e-6)
        act_cfg = act_cfg if act_cfg is not None else dict(type='GELU')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_outs = num_outs
        self.in_index = in_index
        self.in_stride = in_stride
        self.base_stride = base_stride

        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            layers: list[nn.Module] = []
            channels = in_channels
            if scale == 4.0:
                layers += [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
                           build_norm_layer(norm_cfg, channels // 2)[1],
                           build_activation_layer(act_cfg),
                           nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)]
                channels //= 4
            elif scale == 2.0:
                layers.append(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2))
                channels //= 2
            elif scale == 1.0:
                pass
            elif scale == 0.5:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                raise ValueError(f'scale factor {scale} is not supported (choose from 4, 2, 1, 0.5)')
            layers += [
                ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None),
            ]
            self.stages.append(nn.Sequential(*layers))

    @property
    def strides(self) -> tuple[float, ...]:
        """Output strides in input pixels."""
        strides = [self.base_stride / scale for scale in self.scale_factors]
        while len(strides) < self.num_outs:
            strides.append(strides[-1] * 2)
        return tuple(strides)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear resampling of the stride-``in_stride`` map onto the ``base_stride`` grid.

        Cell ``j`` takes the map at pixel ``b*j + b/2``, i.e. at token index ``(b*j + b/2 - s/2) / s``
        (token ``i`` is centred on pixel ``s*i + s/2``); see the class docstring for the cell count.
        """
        s, b = self.in_stride, self.base_stride
        # float32 at least: half-precision coordinates would be off by ~1e-3 * n tokens
        dtype = torch.promote_types(x.dtype, torch.float32)

        def coords(n: int) -> torch.Tensor:
            m = s * (n - 1) // b + 1
            index = (b * torch.arange(m, device=x.device, dtype=dtype) + (b - s) / 2) / s
            return index * (2 / max(n - 1, 1)) - 1  # align_corners=True: -1, +1 = first, last token

        gx, gy = coords(x.shape[-1]), coords(x.shape[-2])
        grid = torch.stack(torch.meshgrid(gx, gy, indexing='xy'), dim=-1)  # (m_h, m_w, 2), (x, y) last
        grid = grid.expand(x.shape[0], -1, -1, -1)
        out = F.grid_sample(x.to(dtype), grid, mode='bilinear', padding_mode='border', align_corners=True)
        return out.to(x.dtype)

    def forward(self, inputs: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[self.in_index]
        if x.dim() != 4:
            raise ValueError(f'SimpleFPN expects (N, C, H, W) feature maps (the ViT needs '
                             f"out_type='featmap'), got a tensor of shape {tuple(x.shape)}")
        if self.in_stride != self.base_stride:
            x = self._resample(x)
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)

