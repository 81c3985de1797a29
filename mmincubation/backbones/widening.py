"""Function-preserving widening of a ViT's state dict by an integer factor (Net2WiderNet-style, as bert2BERT's
function-preserving initialisation and LEMON's width growth do).

Every tensor that writes the residual stream (patch embedding, class token, position embedding, attention
and FFN outputs, layer scales, LayerNorm affine parameters) is *tiled* ``n`` times along the width, so the
widened stream is ``[x, x, ..., x]``; every layer that reads it has its input columns tiled and divided by
``n``, so it computes ``W x`` again. Attention heads are duplicated whole (``n h`` heads of the same head
size, so the softmax scale is unchanged), FFN hidden units duplicated and their outgoing weights split.

What is exact: a LayerNorm over ``[x, ..., x]`` sees the mean and variance of ``x`` (tiling keeps both), so
with tiled affine parameters its output is the tiling of the original's; hence every block, the final norm
and the head compute the source's function, up to float rounding (sums over ``n d`` terms instead of ``d``:
about 1e-6 relative in float32). What is not: a factor that is not an integer (``d`` to ``1.5 d``) needs
uneven duplication, under which LayerNorm's statistics change (bert2BERT's advanced-knowledge init and
LEMON handle it approximately); it is refused here, as are head counts that are not ``n`` times the source's
(another head size would change the softmax scale). The widened network's *training* is not the source's:
the duplicated units start equal and only the data breaks the symmetry (dropout, drop path, weight decay do
too), as with every Net2Net-style growth.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..layout import LayoutError

#: Key endings of a ViT ImageClassifier's tensors by role: written to the residual stream along dim 0 (or the
#: last dim for tokens), read from it along dim 1, or both.
_STREAM_ROWS = ('patch_embed.projection.weight', 'patch_embed.projection.bias', 'ln1.weight', 'ln1.bias',
                'ln2.weight', 'ln2.bias', 'attn.proj.bias', 'ffn.layers.1.bias', 'gamma1.weight', 'gamma2.weight',
                'pre_norm.weight', 'pre_norm.bias')
_TOKENS = ('cls_token', 'dist_token', 'pos_embed')


def _tile_rows(value: torch.Tensor, n: int) -> torch.Tensor:
    return value.repeat(n, *([1] * (value.dim() - 1)))


def _tile_cols(value: torch.Tensor, n: int) -> torch.Tensor:
    return value.repeat(1, n) / n


def widen_vit(state_dict: Mapping[str, torch.Tensor], factor: int) -> dict[str, torch.Tensor]:
    """A ViT ``ImageClassifier`` state dict widened ``factor`` times (width, heads and FFN units), computing the
    same logits (see the module docs for what is exact).

    Raises:
        LayoutError: ``factor`` is not a whole number of at least 2, or a key has no known role in the
            widening (another layer type: SwiGLU, a head with a hidden layer), named.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise LayoutError(f'widening needs a whole factor of at least 2, got {factor!r}')
    n, widened = factor, {}
    for key, value in state_dict.items():
        name = key.split('.', 1)[1] if key.startswith('backbone.') else key
        if name in _TOKENS:
            widened[key] = value.repeat(*([1] * (value.dim() - 1)), n)
        elif name.endswith(_STREAM_ROWS):
            widened[key] = _tile_rows(value, n)
        elif name.endswith('attn.qkv.weight'):
            widened[key] = torch.cat([_tile_cols(_tile_rows(part, n), n) for part in value.chunk(3)])
        elif name.endswith('attn.qkv.bias'):
            widened[key] = torch.cat([_tile_rows(part, n) for part in value.chunk(3)])
        elif name.endswith(('attn.proj.weight', 'ffn.layers.1.weight')):
            widened[key] = _tile_cols(_tile_rows(value, n), n)
        elif name.endswith('ffn.layers.0.0.weight'):
            widened[key] = _tile_cols(_tile_rows(value, n), n)
        elif name.endswith('ffn.layers.0.0.bias'):
            widened[key] = _tile_rows(value, n)
        elif key.startswith('head.') and key.endswith('.weight') and value.dim() == 2:
            widened[key] = _tile_cols(value, n)
        elif key.startswith('head.') and key.endswith('.bias'):
            widened[key] = value.clone()
        else:
            raise LayoutError(f'{key} (shape {tuple(value.shape)}) has no role in widening a ViT (residual '
                              'stream, attention, FFN, head): another layer type cannot be widened this way')
    return widened
