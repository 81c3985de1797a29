"""A ViT backbone that loads a patch embedding trained on another number of image channels (1 <-> C).

The demo's incubated ViT sees grey images (one channel); a downstream data set of RGB photos needs three.
The standard fix (as I3D's "inflation" and timm's ``adapt_input_conv``) is to spread the pretrained kernels
over the new channels, averaged so that a grey image, whose C channels are equal, gives exactly the
features it had: ``W_C[:, c] = W_1[:, 0] / C``; the reverse (a C-channel checkpoint into a 1-channel
backbone) sums them, ``W_1[:, 0] = sum_c W_C[:, c]``. mmpretrain's ``VisionTransformer`` instead leaves the
mismatched tensor at its random initialisation and only logs a warning.
"""
from __future__ import annotations

import torch
from mmengine.logging import print_log
from mmpretrain.models import VisionTransformer

from ..backbones.vit import VIT
from ..registry import MODELS

#: The patch embedding's convolution weight in the ViT's state dict, (embed_dims, C, p, p).
PATCH_WEIGHT = VIT.patch_weight


def inflatable(have: int, want: int) -> bool:
    """Whether a kernel over ``have`` input channels can be inflated to ``want`` (equal, or one of them 1)."""
    return have == want or 1 in (have, want)


def inflate_channels(weight: torch.Tensor, in_channels: int, name: str = PATCH_WEIGHT) -> torch.Tensor:
    """``weight`` of shape ``(D, c, p, p)`` as a kernel over ``in_channels`` channels, same response to grey input.

    ``c == 1``: the kernel is repeated over the channels and divided by ``in_channels`` (the mean);
    ``in_channels == 1``: the ``c`` kernels are summed; ``c == in_channels``: returned unchanged.

    Raises:
        ValueError: naming ``name`` when neither side has one channel (e.g. 3 -> 4): there is no
            inflation that keeps the features, and a random patch embedding would waste the checkpoint.
    """
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if not inflatable(have, in_channels):
        raise ValueError(f'{name} of shape {tuple(weight.shape)} takes {have} image channels, the backbone '
                         f'{in_channels} (in_channels): only 1 <-> C channels can be inflated')
    if have == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    return weight.sum(dim=1, keepdim=True)


@MODELS.register_module()
class InflatingVisionTransformer(VisionTransformer):
    """``mmpretrain.VisionTransformer`` (same network, same state-dict keys) whose patch embedding loads
    from a checkpoint of another number of image channels by :func:`inflate_channels`.

    Use it as the backbone when ``in_channels`` differs from the checkpoint's, e.g. the demo's grey
    Fashion-MNIST ViT on RGB photos (``in_channels=3``); with equal channels it loads as its parent.
    The inflation happens in a ``load_state_dict`` pre-hook, so it applies to every loading path:
    ``init_cfg=dict(type='Pretrained')``, ``load_from`` and ``load_state_dict``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._register_load_state_dict_pre_hook(self._inflate_patch_embed)

    def _inflate_patch_embed(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        key = prefix + PATCH_WEIGHT
        if key not in state_dict:
            return
        in_channels = self.patch_embed.projection.in_channels
        weight = state_dict[key]
        if weight.shape[1] != in_channels:
            print_log(f'{key}: inflating the patch embedding from {weight.shape[1]} to {in_channels} image '
                      'channels (a grey image keeps its features)', logger='current')
            state_dict[key] = inflate_channels(weight, in_channels, key)
