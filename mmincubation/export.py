"""Export of mmpretrain classifiers (the pipeline's products) to timm and to safetensors.

The products are plain mmpretrain ``ImageClassifier`` checkpoints; here they become

* the state dict of a timm ``VisionTransformer`` (``vit_*``) or ``SwinTransformer`` (``swin_*``) with the
  ``timm.create_model`` arguments that build it (:func:`timm_export`, :func:`export_timm_file`): the timm
  model computes the same logits on the same input (float32 round-off, tested to 1e-5);
* the mmpretrain state dict itself in a ``.safetensors`` file whose metadata holds the mmincubation tag and
  the ``dataset_meta`` as JSON strings (:func:`export_safetensors_file`, read back by :func:`read_safetensors`).

Key maps. The ViT's are those of :mod:`mmincubation.convert_official` (official Deep Incubation checkpoints
are timm ViTs), inverted, plus layer scales (``gamma1``/``gamma2`` -> ``ls1``/``ls2``), the pre-norm and the
pooled-feature norm; mmpretrain's ``DeiT3`` is timm's ViT with ``no_embed_class`` (its position embedding
leaves out the class token) whose ``norm2`` holds ``ln1`` (mmpretrain 1.2's ``DeiT3TransformerEncoderLayer``
normalises the FFN's input with ``ln1``; its ``ln2`` is saved, never used). Swin's mirror the Swin converters
of mmdet/mmseg (``tools/model_converters/swin2mmdet.py``, the timm/official -> OpenMMLab direction), inverted:

* ``stages.i.blocks.j.attn.w_msa.*`` -> ``layers.i.blocks.j.attn.*``; the ``relative_position_index``
  buffers are not saved (timm computes them; they are checked to be the standard index), the tables are
  copied as they are (both index them as ``(dh + Wh - 1) * (2 Ww - 1) + dw + Ww - 1``);
* patch merging after stage ``i`` (``stages.i.downsample``) -> the start of timm's stage ``i + 1``
  (``layers.{i+1}.downsample``). mmcv's ``PatchMerging`` gathers each 2x2 neighbourhood with ``nn.Unfold``:
  channel ``c * 4 + 2 * dh + dw``; timm concatenates the neighbours ``x0 (0,0), x1 (1,0), x2 (0,1), x3 (1,1)``:
  channel ``(2 * dw + dh) * C + c``. The reduction's input columns and the norm's weight and bias are
  permuted accordingly (the LayerNorm over the 4C channels does not care about their order);
* the classifier's output norm ``norm<last>`` -> ``norm``; output norms of other stages do not reach the
  logits and are left out.

What cannot be exported stops with one :class:`ExportError` line naming the config field: another backbone,
neck or head class, another pooling (``out_type``), a final norm before averaged features, an absolute
position embedding in Swin, or a Swin window layout that timm computes differently (mmpretrain pads a
feature map to its window and then shifts it; timm shifts, then pads, and shrinks windows to small maps
unless ``always_partition``: a shifted block agrees only where its map is a multiple of the window). After
the mapping, keys and shapes are compared with the timm model itself (built on the meta device), so a
mapping that does not fit is never written.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from mmcv.cnn.bricks.transformer import FFN, AdaptivePadding, PatchEmbed, PatchMerging
from mmengine.config import Config
from mmpretrain.models import (
    DeiT3,
    GlobalAveragePooling,
    ImageClassifier,
    LinearClsHead,
    SwinTransformer,
    VisionTransformer,
    VisionTransformerClsHead,
)
from mmpretrain.models.backbones.deit3 import DeiT3FFN, DeiT3TransformerEncoderLayer
from mmpretrain.models.backbones.swin_transformer import SwinBlock
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
from mmpretrain.models.utils import MultiheadAttention, ShiftWindowMSA, WindowMSA
from torch import nn

from .backbones import SWIN, VIT
from .checkpoint import CheckpointError, check_output, load_fitting, load_weights, write_atomic
from .convert_official import BLOCK_TO_OURS, OFFICIAL_NAMING, OFFICIAL_TO_OURS
from .layout import LayoutError, check_state_dict
from .tags import META_KEY


class ExportError(LayoutError):
    """A model, config field or file that cannot be exported as asked."""


#: Our ViT block keys -> timm's: the official (timm) map inverted, and DeiT-III's layer scales.
VIT_BLOCK_TO_TIMM = {ours: theirs for theirs, ours in BLOCK_TO_OURS.items()} | {
    'attn.gamma1.weight': 'ls1.gamma', 'ffn.gamma2.weight': 'ls2.gamma'}
#: Our ViT keys outside the blocks -> timm's (``head.fc.*``: a ``LinearClsHead``).
VIT_OUTER_TO_TIMM = {ours: theirs for theirs, ours in OFFICIAL_TO_OURS.items()} | {
    'backbone.pre_norm.weight': 'norm_pre.weight', 'backbone.pre_norm.bias': 'norm_pre.bias',
    'backbone.ln2.weight': 'fc_norm.weight', 'backbone.ln2.bias': 'fc_norm.bias',
    'head.fc.weight': 'head.weight', 'head.fc.bias': 'head.bias'}
#: Our Swin block keys -> timm's (``relative_position_index`` is a buffer timm does not save).
SWIN_BLOCK_TO_TIMM = {
    **{f'norm{i}.{p}': f'norm{i}.{p}' for i in (1, 2) for p in ('weight', 'bias')},
    **{f'attn.w_msa.{name}': f'attn.{name}'
       for name in ('qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias', 'relative_position_bias_table')},
    **{ours: theirs for ours, theirs in VIT_BLOCK_TO_TIMM.items() if ours.startswith('ffn.layers.')},
}
SWIN_INDEX = 'attn.w_msa.relative_position_index'
TIMM_SWIN_BLOCK = 'layers.{stage}.blocks.{block}.'
#: The timm entry points; every architecture argument of theirs is overridden by the exported kwargs.
VIT_ENTRY, SWIN_ENTRY = 'vit_base_patch16_224', 'swin_base_patch4_window7_224'
#: LayerNorm eps of timm's defaults: ``timm.layers.LayerNorm`` in the ViT, ``nn.LayerNorm`` in Swin.
TIMM_EPS = {VIT_ENTRY: 1e-6, SWIN_ENTRY: 1e-5}


@dataclass(frozen=True)
class TimmSpec:
    """What ``timm.create_model`` needs to build the exported network.

    ``kwargs`` are JSON values; ``norm_eps`` is the LayerNorm eps when timm's default (1e-6 in its ViT, 1e-5
    in Swin) is not the model's: a ``norm_layer`` callable, which JSON cannot hold. ``pretrained_cfg`` is the
    ``pretrained_cfg_overlay``: ``num_classes``, ``input_size`` (C, H, W), ``mean``/``std`` of timm's 0-1
    pixels (mmpretrain's data preprocessor normalises 0-255 pixels: both divided by 255) and ``label_names``.
    """

    model_name: str
    kwargs: dict
    norm_eps: float | None = None
    pretrained_cfg: dict = field(default_factory=dict)

    def create_kwargs(self) -> dict:
        """``timm.create_model(self.model_name, pretrained=False, **create_kwargs())`` builds the network."""
        kwargs = dict(self.kwargs)
        kwargs['pretrained_cfg_overlay'] = {key: tuple(value) if isinstance(value, list) else value
                                            for key, value in self.pretrained_cfg.items()}
        if self.norm_eps is not None:
            kwargs['norm_layer'] = functools.partial(nn.LayerNorm, eps=self.norm_eps)
        return kwargs

    def to_json(self) -> dict:
        return dict(model_name=self.model_name, kwargs=self.kwargs, norm_eps=self.norm_eps,
                    pretrained_cfg_overlay=self.pretrained_cfg)

    @classmethod
    def from_json(cls, record: Mapping) -> TimmSpec:
        """The spec a ``.json`` written by :func:`export_timm_file` holds."""
        return cls(record['model_name'], dict(record['kwargs']), record.get('norm_eps'),
                   dict(record.get('pretrained_cfg_overlay') or {}))

    def python(self, weights: str) -> str:
        """Python lines that build the timm model and load ``weights`` (a file :func:`export_timm_file` wrote)."""
        overlay = self.create_kwargs()['pretrained_cfg_overlay']
        args = ''.join(f', {key}={value!r}' for key, value in self.kwargs.items())
        args_tail = f', pretrained_cfg_overlay={overlay!r}'
        safetensors = weights.endswith('.safetensors')
        imports = ['import functools'] if self.norm_eps is not None else []
        imports.append('import timm')
        if self.norm_eps is not None or not safetensors:
            imports.append('import torch')
        if self.norm_eps is not None:
            args += f', norm_layer=functools.partial(torch.nn.LayerNorm, eps={self.norm_eps!r})'
        if safetensors:
            imports.append('from safetensors.torch import load_file')
        load = f'load_file({weights!r})' if safetensors else f'torch.load({weights!r}, weights_only=True)'
        return '\n'.join(imports + [
            f'model = timm.create_model({self.model_name!r}, pretrained=False{args}{args_tail})',
            f'model.load_state_dict({load}, strict=True)'])


def _refuse(where: str, value: object, why: str) -> ExportError:
    return ExportError(f'model.{where}={value!r}: {why}')


def _class_name(module: object) -> str:
    return type(module).__name__


def _same_method(module: object, base: type, *names: str) -> bool:
    """Whether ``module``'s class computes ``names`` as ``base`` does (itself or a subclass that keeps them)."""
    return isinstance(module, base) and all(getattr(type(module), name) is getattr(base, name) for name in names)


def _layer_norm_eps(module: nn.Module | None, where: str) -> float:
    """The eps of an affine ``nn.LayerNorm`` (with bias), the only norm timm's ViT and Swin take."""
    if not isinstance(module, nn.LayerNorm) or not module.elementwise_affine or module.bias is None:
        raise _refuse(where, _class_name(module), "timm's ViT and Swin normalise with an affine LayerNorm "
                      "(norm_cfg=dict(type='LN'))")
    return float(module.eps)


def _one(values: Sequence[float], where: str, what: str) -> float:
    if len(set(values)) != 1:
        raise _refuse(where, sorted(set(values)), f'timm builds every {what} alike; this model mixes them')
    return values[0]


def _check_patch_embed(embed: nn.Module, img_size: tuple[int, int], where: str) -> tuple[int, int]:
    """The patch size of a patch embedding timm's ``PatchEmbed`` computes alike: a convolution with
    stride = kernel over an image it divides (timm does not pad; mmcv's ``PatchEmbed`` would)."""
    conv = getattr(embed, 'projection', None)
    if not isinstance(embed, PatchEmbed) or not isinstance(conv, nn.Conv2d) or conv.stride != conv.kernel_size \
            or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1:
        raise _refuse(f'{where}.patch_cfg', _class_name(embed), "timm embeds patches with a convolution whose stride "
                      'is its kernel (mmcv PatchEmbed, conv_type Conv2d, no padding or dilation)')
    if any(size % patch for size, patch in zip(img_size, conv.kernel_size)):
        raise _refuse(f'{where}.img_size', img_size, f'patches of {conv.kernel_size} do not tile it; mmpretrain pads '
                      'the image, timm does not: choose an image size the patch size divides')
    return conv.kernel_size


def _square(pair: tuple[int, int]) -> int | list[int]:
    return pair[0] if pair[0] == pair[1] else list(pair)


def _check_classifier(model: nn.Module) -> None:
    if not _same_method(model, ImageClassifier, 'extract_feat', 'forward'):
        raise _refuse('type', _class_name(model), "timm's classifiers compute mmpretrain's ImageClassifier "
                      '(backbone, neck, head)')


def _head_in(model: nn.Module, width: int) -> str:
    """The head's weight prefix; a linear head (no hidden layer) on ``width`` features is required."""
    head = model.head
    if type(head) is LinearClsHead:
        prefix = 'head.fc.'
    elif type(head) is VisionTransformerClsHead and head.hidden_dim is None:
        prefix = 'head.layers.head.'
    else:
        extra = ' with hidden_dim' if type(head) is VisionTransformerClsHead else ''
        raise _refuse('head.type', _class_name(head) + extra, "timm's head is one Linear layer: LinearClsHead or "
                      'VisionTransformerClsHead without hidden_dim')
    if head.in_channels != width:
        raise _refuse('head.in_channels', head.in_channels, f'the backbone gives {width} features')
    return prefix


# --- ViT -------------------------------------------------------------------------------------------


def _vit_pooling(backbone: VisionTransformer, neck: nn.Module | None) -> dict:
    """timm's ``global_pool`` / ``final_norm`` / ``fc_norm`` for what mmpretrain hands to the head.

    ``cls_token``: the normed class token (timm ``'token'``); ``avg_featmap``: the patch tokens averaged,
    then ``ln2`` (timm ``'avg'`` with ``fc_norm``; exact only without the final norm ``ln1`` before the
    average, which timm does not have then); ``featmap`` + ``GlobalAveragePooling`` neck: the normed patch
    tokens averaged (timm ``'avg'`` without ``fc_norm``).
    """
    out_type = backbone.out_type
    if out_type == 'featmap':
        if not (type(neck) is GlobalAveragePooling and isinstance(neck.gap, nn.AdaptiveAvgPool2d)):
            raise _refuse('neck', _class_name(neck), "out_type='featmap' classifies through a GlobalAveragePooling "
                          "neck (dim=2) for timm's global_pool='avg'")
        return dict(global_pool='avg', final_norm=backbone.final_norm, fc_norm=False)
    if neck is not None:
        raise _refuse('neck', _class_name(neck), f"out_type={out_type!r} gives the head (B, C) features: timm has no "
                      'neck there (neck=None)')
    if out_type == 'cls_token':
        return dict(global_pool='token', final_norm=backbone.final_norm, fc_norm=False)
    if out_type == 'avg_featmap':
        if not hasattr(backbone, 'ln2'):
            raise _refuse('backbone.out_type', out_type, f"mmpretrain's {_class_name(backbone)} builds no ln2 to norm "
                          "the average: it cannot run (use 'cls_token', or 'featmap' with a GlobalAveragePooling neck)")
        if backbone.final_norm:
            raise _refuse('backbone.final_norm', True, "with out_type='avg_featmap' mmpretrain norms the tokens (ln1) "
                          "and their average (ln2); timm's global_pool='avg' norms only the average: final_norm=False "
                          'is exportable')
        return dict(global_pool='avg', final_norm=True, fc_norm=True)
    raise _refuse('backbone.out_type', out_type, "timm's classifier pools the class token ('cls_token') or the "
                  "patch tokens ('avg_featmap', or 'featmap' with a GlobalAveragePooling neck)")


def _vit_kwargs(model: nn.Module) -> tuple[dict, float, str, bool]:
    """``create_model`` kwargs of a ViT classifier, the LayerNorm eps, the head's key prefix and whether the model
    is a ``DeiT3`` (its layers normalise both branches with ``ln1``: :func:`_vit_layer`)."""
    backbone = model.backbone
    deit3 = _same_method(backbone, DeiT3, 'forward', '_format_output')
    if not deit3 and not _same_method(backbone, VisionTransformer, 'forward', '_format_output'):
        raise _refuse('backbone.type', _class_name(backbone), "timm's vit_* computes mmpretrain's VisionTransformer "
                      'and DeiT3 (and subclasses that keep their forward), not a class that changes it (DeiT with '
                      'its distillation token, ...)')
    pooling = _vit_pooling(backbone, model.neck)
    depth = len(backbone.layers)
    if depth - 1 not in backbone.out_indices:
        raise _refuse('backbone.out_indices', list(backbone.out_indices), f'the head must see the last block '
                      f'({depth - 1} or -1): timm classifies the last block only')
    width, img_size = backbone.embed_dims, tuple(backbone.img_size)
    patch = _check_patch_embed(backbone.patch_embed, img_size, 'backbone')
    pre_norm = not isinstance(getattr(backbone, 'pre_norm', nn.Identity()), nn.Identity)  # DeiT3 has none
    if (backbone.patch_embed.projection.bias is None) != pre_norm:
        raise _refuse('backbone.patch_cfg.bias', backbone.patch_embed.projection.bias is not None,
                      "timm's patch embedding has a bias exactly when there is no pre_norm")
    rows = [_vit_layer(layer, index, width, deit3) for index, layer in enumerate(backbone.layers)]
    for key, name in (('num_heads', 'attention heads'), ('hidden', 'feed-forward widths'),
                      ('qkv_bias', 'qkv biases'), ('proj_bias', 'projection biases'),
                      ('layer_scale', 'layer scales')):
        _one([row[key] for row in rows], 'backbone.layer_cfgs', name)
    norms = [eps for row in rows for eps in row['eps']]
    norms += [_layer_norm_eps(getattr(backbone, name), f'backbone.norm_cfg ({name})')
              for name, present in (('ln1', backbone.final_norm), ('ln2', backbone.out_type == 'avg_featmap'),
                                    ('pre_norm', pre_norm)) if present]
    first = rows[0]
    kwargs = dict(img_size=_square(img_size), patch_size=_square(patch),
                  in_chans=backbone.patch_embed.projection.in_channels, num_classes=model.head.num_classes,
                  embed_dim=width, depth=depth, num_heads=first['num_heads'], mlp_ratio=first['hidden'] / width,
                  qkv_bias=first['qkv_bias'], proj_bias=first['proj_bias'],
                  init_values=1.0 if first['layer_scale'] else None, class_token=backbone.cls_token is not None,
                  no_embed_class=deit3, pre_norm=pre_norm, **pooling)  # DeiT3 adds pos_embed before the cls token
    return kwargs, _one(norms, 'backbone.norm_cfg.eps', 'LayerNorm'), _head_in(model, width), deit3


def _vit_layer(layer: nn.Module, index: int, width: int, deit3: bool) -> dict:
    """What timm's ``Block`` needs of one mmpretrain ``TransformerEncoderLayer`` (``DeiT3TransformerEncoderLayer``).

    mmpretrain 1.2's ``DeiT3TransformerEncoderLayer.forward`` (backbones/deit3.py) feeds the FFN ``ln1(x)``:
    its ``ln2`` is built and saved but never used, so timm's ``norm2`` gets ``ln1``'s weights.
    """
    where = f'backbone.layer_cfgs[{index}]'
    layer_class, ffn_class = (DeiT3TransformerEncoderLayer, DeiT3FFN) if deit3 else (TransformerEncoderLayer, FFN)
    if not _same_method(layer, layer_class, 'forward'):
        raise _refuse(where, _class_name(layer), f"timm's Block computes mmpretrain's {layer_class.__name__}")
    attn, ffn = layer.attn, layer.ffn
    if not _same_method(attn, MultiheadAttention, 'forward') or attn.v_shortcut or attn.input_dims != width:
        raise _refuse(f'{where}.attn', _class_name(attn), "timm's Attention is mmpretrain's MultiheadAttention "
                      'without v_shortcut, on the embedding width')
    _check_ffn(ffn, f'{where}.ffn_type', ffn_class)
    layer_scale = not isinstance(attn.gamma1, nn.Identity)
    if layer_scale == isinstance(ffn.gamma2, nn.Identity):
        raise _refuse(f'{where}.layer_scale_init_value', 'on one branch', 'timm scales both residual branches or none')
    norms = (layer.ln1, ) if deit3 else (layer.ln1, layer.ln2)
    return dict(num_heads=attn.num_heads, hidden=ffn.layers[0][0].out_features, qkv_bias=attn.qkv.bias is not None,
                proj_bias=attn.proj.bias is not None, layer_scale=layer_scale,
                eps=[_layer_norm_eps(norm, f'{where}.norm_cfg') for norm in norms])


def _check_ffn(ffn: nn.Module, where: str, ffn_class: type = FFN) -> None:
    """Refuse an FFN other than timm's ``Mlp``: two Linear layers, exact GELU between them, a residual."""
    activation = ffn.layers[0][1] if _same_method(ffn, ffn_class, 'forward') and ffn.num_fcs == 2 else None
    if type(activation) is not nn.GELU or activation.approximate != 'none' or not ffn.add_identity:
        raise _refuse(where, _class_name(ffn), "timm's Mlp is mmcv's FFN of two Linear layers with exact GELU "
                      "(ffn_type='origin', act_cfg=dict(type='GELU'))")


def _vit_state(state: Mapping[str, torch.Tensor], head_prefix: str, deit3: bool) -> dict[str, torch.Tensor]:
    """Our ViT keys renamed to timm's; a ``DeiT3``'s ``ln1`` also becomes ``norm2``, its unused ``ln2`` is dropped."""
    converted = {}
    for key, value in state.items():
        block = VIT.naming.split(key)
        if block is not None:
            if deit3 and block.rest.startswith('ln2.'):
                continue
            if deit3 and block.rest.startswith('ln1.'):
                converted[OFFICIAL_NAMING.join(0, block.index, 'norm2.' + block.rest[len('ln1.'):])] = value
            converted[OFFICIAL_NAMING.join(0, block.index, VIT_BLOCK_TO_TIMM[block.rest])] = value
        elif key.startswith('head.') and not key.startswith(head_prefix):
            raise ExportError(f'state-dict key {key!r} is not part of a {head_prefix}* head')
        else:
            converted[VIT_OUTER_TO_TIMM[key]] = value
    return converted


# --- Swin ------------------------------------------------------------------------------------------


def _merging_to_timm(value: torch.Tensor, channels: int) -> torch.Tensor:
    """Permute a patch merging's 4C axis (the last) from ``nn.Unfold``'s ``c*4 + 2*dh + dw`` to timm's
    ``(2*dw + dh)*C + c`` (module docs)."""
    lead = value.shape[:-1]
    return value.reshape(*lead, channels, 2, 2).movedim((-3, -2, -1), (-1, -2, -3)).reshape(*lead, 4 * channels)


def _swin_kwargs(model: nn.Module) -> tuple[dict, float, str, list[tuple[int, int]]]:
    """``create_model`` kwargs of a Swin classifier (less ``always_partition``), the LayerNorm eps, the head's
    key prefix and each stage's feature-map size (H, W) as mmpretrain computes it."""
    backbone = model.backbone
    if not _same_method(backbone, SwinTransformer, 'forward'):
        raise _refuse('backbone.type', _class_name(backbone), "timm's swin_* computes mmpretrain's SwinTransformer")
    if backbone.use_abs_pos_embed:
        raise _refuse('backbone.use_abs_pos_embed', True, "timm's SwinTransformer has no absolute position embedding")
    if not (type(model.neck) is GlobalAveragePooling and isinstance(model.neck.gap, nn.AdaptiveAvgPool2d)):
        raise _refuse('neck', _class_name(model.neck), "timm's Swin averages the last feature map: a "
                      'GlobalAveragePooling neck (dim=2) is required')
    last = len(backbone.stages) - 1
    if last not in backbone.out_indices:
        raise _refuse('backbone.out_indices', list(backbone.out_indices), f'the head must see the last stage ({last})')
    img_size = tuple(backbone.patch_embed.init_input_size)
    patch = _check_patch_embed(backbone.patch_embed, img_size, 'backbone')
    eps = [_layer_norm_eps(backbone.patch_embed.norm, 'backbone.patch_cfg.norm_cfg'),
           _layer_norm_eps(getattr(backbone, f'norm{last}'), 'backbone.norm_cfg')]
    sizes, dims, heads, ratios, windows, qkv_bias = [tuple(backbone.patch_resolution)], [backbone.embed_dims], [], [], \
        [], []
    for s, stage in enumerate(backbone.stages):
        for b, block in enumerate(stage.blocks):
            where = f'backbone.stage_cfgs[{s}].block_cfgs[{b}]'
            attn = block.attn
            if not _same_method(block, SwinBlock, 'forward') or not _same_method(attn, ShiftWindowMSA, 'forward') \
                    or not _same_method(attn.w_msa, WindowMSA, 'forward'):
                raise _refuse(where, _class_name(block), "timm's SwinTransformerBlock computes mmpretrain's SwinBlock "
                              '(ShiftWindowMSA of WindowMSA)')
            _check_ffn(block.ffn, f'{where}.ffn_cfgs')
            if not isinstance(block.ffn.gamma2, nn.Identity):
                raise _refuse(f'{where}.ffn_cfgs.layer_scale_init_value', 'set', "timm's Swin has no layer scale")
            if not math.isclose(attn.w_msa.scale, (dims[s] // attn.w_msa.num_heads) ** -0.5):
                raise _refuse(f'{where}.attn_cfgs.qk_scale', attn.w_msa.scale, 'timm scales by head_dim ** -0.5')
            heads.append((s, attn.w_msa.num_heads))
            ratios.append((s, block.ffn.layers[0][0].out_features / dims[s]))
            windows.append((s, attn.window_size))
            qkv_bias.append(attn.w_msa.qkv.bias is not None)
            eps += [_layer_norm_eps(norm, f'{where}.norm_cfg') for norm in (block.norm1, block.norm2)]
        merging = stage.downsample
        if merging is None:
            continue
        where = f'backbone.stage_cfgs[{s}].downsample_cfg'
        if type(merging) is not PatchMerging or merging.sampler.kernel_size != (2, 2) \
                or merging.sampler.stride != (2, 2) or merging.sampler.dilation != (1, 1) \
                or merging.sampler.padding != (0, 0) or merging.reduction.bias is not None \
                or not isinstance(merging.adaptive_padding, AdaptivePadding) \
                or merging.adaptive_padding.padding != 'corner':
            raise _refuse(where, _class_name(merging), "timm merges 2x2 patches (kernel 2, stride 2, padding 'corner', "
                          'no bias) as mmcv PatchMerging does by default')
        eps.append(_layer_norm_eps(merging.norm, f'{where}.norm_cfg'))
        dims.append(merging.out_channels)
        sizes.append(tuple(math.ceil(size / 2) for size in sizes[-1]))  # padded at the bottom / right, as timm
    per_stage = {}
    for name, rows in (('num_heads', heads), ('mlp_ratio', ratios), ('window_size', windows)):
        values = [[value for stage, value in rows if stage == s] for s in range(last + 1)]
        per_stage[name] = [_one(stage_values, f'backbone.stage_cfgs[{s}]', name)
                           for s, stage_values in enumerate(values)]
    ratio = per_stage['mlp_ratio']
    window = per_stage['window_size']
    kwargs = dict(img_size=_square(img_size), patch_size=_square(patch),
                  in_chans=backbone.patch_embed.projection.in_channels, num_classes=model.head.num_classes,
                  global_pool='avg', embed_dim=dims[0] if dims == [dims[0] * 2 ** s for s in range(last + 1)] else dims,
                  depths=[len(stage.blocks) for stage in backbone.stages], num_heads=per_stage['num_heads'],
                  window_size=window[0] if len(set(window)) == 1 else window,
                  mlp_ratio=ratio[0] if len(set(ratio)) == 1 else ratio,
                  qkv_bias=bool(_one(qkv_bias, 'backbone.stage_cfgs.block_cfgs.attn_cfgs.qkv_bias', 'qkv bias')))
    return kwargs, _one(eps, 'backbone.norm_cfg.eps', 'LayerNorm'), _head_in(model, dims[-1]), sizes


def _swin_windows(backbone: SwinTransformer, timm_model: nn.Module, sizes: list[tuple[int, int]]) -> str | None:
    """The first block whose shifted-window attention the timm model computes differently, described; or None.

    mmpretrain's ``ShiftWindowMSA`` keeps the window size, pads the map at the bottom / right to a multiple
    of it, *then* rolls it by the shift, which it drops where the map is exactly one window (unless
    ``pad_small_map``). timm keeps the window only where the map is larger (or with ``always_partition``), else
    shrinks it to the map and does not shift, and rolls the map *before* padding it. So a block agrees when
    both use the configured window, shift by the same amount, and a shifted block needs no padding (its map
    is a multiple of the window, and timm's attention mask is made for that map).
    """
    for s, (stage, timm_stage) in enumerate(zip(backbone.stages, timm_model.layers)):
        height, width = sizes[s]
        for b, (block, timm_block) in enumerate(zip(stage.blocks, timm_stage.blocks)):
            window, shift = block.attn.window_size, block.attn.shift_size
            if min(height, width) < window and not block.attn.pad_small_map:
                return (f'mmpretrain itself cannot run it: the {height}x{width} map of stage {s} is smaller than '
                        f'the window {window} (set pad_small_map=True or a smaller window_size)')
            if min(height, width) == window and not block.attn.pad_small_map:
                shift = 0
            padded = (height % window or width % window) != 0
            timm_window, timm_shift = tuple(timm_block.window_size), tuple(timm_block.shift_size)
            timm_grid = tuple(math.ceil(r / w) * w for r, w in zip(timm_block.input_resolution, timm_window))
            ours = f'block {b} of stage {s}: mmpretrain uses windows of {window} shifted by {shift}' + \
                (f' over the map padded to {math.ceil(height / window) * window}' if padded else '')
            if timm_window != (window, window) or timm_shift != (shift, shift):
                return f'{ours}, timm windows of {timm_window} shifted by {timm_shift}'
            if shift and (padded or timm_grid != (height, width)):
                return f'{ours}; timm rolls the {height}x{width} map before padding it'
    return None


def _swin_state(state: Mapping[str, torch.Tensor], head_prefix: str, last: int) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state.items():
        block = SWIN.naming.split(key)
        stage = SWIN.naming.between_stage(key)
        if block is not None:
            if block.rest == SWIN_INDEX:
                _check_relative_index(key, value)
                continue
            converted[TIMM_SWIN_BLOCK.format(stage=block.stage, block=block.index) + SWIN_BLOCK_TO_TIMM[block.rest]] \
                = value
        elif stage is not None:
            rest = key[len(SWIN.naming.between_key.format(stage=stage)):]
            converted[f'layers.{stage + 1}.downsample.{rest}'] = _merging_to_timm(value, value.shape[-1] // 4)
        elif key.startswith('backbone.patch_embed.'):
            converted['patch_embed.' + key[len('backbone.patch_embed.'):].replace('projection.', 'proj.')] = value
        elif key.startswith(f'backbone.norm{last}.'):
            converted['norm.' + key[len(f'backbone.norm{last}.'):]] = value
        elif key.startswith(head_prefix):
            converted['head.fc.' + key[len(head_prefix):]] = value
        elif not key.startswith('backbone.norm'):  # output norms of earlier stages do not reach the logits
            raise ExportError(f'state-dict key {key!r} has no place in timm\'s SwinTransformer')
    return converted


def _check_relative_index(key: str, index: torch.Tensor) -> None:
    """Refuse a relative position index other than the one both libraries compute for its window."""
    get_relative_position_index = _require('timm.models.swin_transformer').get_relative_position_index
    window = math.isqrt(index.shape[0])
    if index.shape != (window * window, window * window) or \
            not torch.equal(index.cpu().long(), get_relative_position_index(window, window)):
        raise ExportError(f'{key} is not the standard relative position index of a {window}x{window} window; '
                          'timm computes that one, so this model cannot be exported exactly')


# --- Both ------------------------------------------------------------------------------------------


def _require(name: str) -> ModuleType:
    """Import ``name`` (timm, safetensors: needed only to export), or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ExportError(f'exporting needs {name}: pip install {name}') from error


def _pretrained_cfg(kwargs: dict, data_preprocessor: Mapping | None, classes: Sequence[str] | None) -> dict:
    size = kwargs['img_size']
    channels = kwargs['in_chans']
    cfg = dict(num_classes=kwargs['num_classes'], input_size=[channels, *((size, size) if isinstance(size, int)
                                                                           else size)])
    preprocessor = dict(data_preprocessor or {})
    if 'mean' in preprocessor or 'std' in preprocessor:
        for name, default in (('mean', 0.0), ('std', 1.0)):
            values = [float(v) / 255 for v in preprocessor.get(name) or [default]]
            cfg[name] = values * channels if len(values) == 1 else values
    if classes:
        cfg['label_names'] = [str(name) for name in classes]
    return cfg


def timm_export(model: nn.Module, data_preprocessor: Mapping | None = None,
                classes: Sequence[str] | None = None) -> tuple[TimmSpec, dict[str, torch.Tensor]]:
    """The timm model of an mmpretrain ``ImageClassifier`` and its state dict.

    Args:
        model: the classifier, with its weights (or on the meta device, with them assigned:
            :func:`load_classifier`). Backbones: ``VisionTransformer`` and ``DeiT3`` (and subclasses that keep
            their forward), ``SwinTransformer``; heads: ``LinearClsHead`` / ``VisionTransformerClsHead``.
        data_preprocessor: the config's ``data_preprocessor`` (``mean``/``std`` of 0-255 pixels), recorded
            for timm's data config; None records none.
        classes: class names (``dataset_meta['classes']``), recorded as timm's ``label_names``.

    Returns:
        The :class:`TimmSpec` and the state dict of ``timm.create_model(spec.model_name, **spec.create_kwargs())``,
        which loads it with ``strict=True`` and computes the same logits on inputs of the configured size.

    Raises:
        ExportError: one line naming the config field (``model.backbone.out_type=...``) timm cannot express.
    """
    _check_classifier(model)
    state = dict(model.state_dict())
    if isinstance(model.backbone, SwinTransformer):
        name, (kwargs, eps, head_prefix, sizes) = SWIN_ENTRY, _swin_kwargs(model)
        converted = _swin_state(state, head_prefix, len(model.backbone.stages) - 1)
    elif isinstance(model.backbone, VisionTransformer):
        name, (kwargs, eps, head_prefix, deit3) = VIT_ENTRY, _vit_kwargs(model)
        converted = _vit_state(state, head_prefix, deit3)
    else:
        raise _refuse('backbone.type', _class_name(model.backbone), "timm export supports mmpretrain's "
                      'VisionTransformer and DeiT3 (vit_*) and SwinTransformer (swin_*)')
    spec = TimmSpec(name, kwargs, None if math.isclose(eps, TIMM_EPS[name]) else eps,
                    _pretrained_cfg(kwargs, data_preprocessor, classes))
    timm = _require('timm')
    if name == SWIN_ENTRY:
        mismatch = None
        for always_partition in (False, True):
            spec = TimmSpec(name, dict(kwargs, always_partition=always_partition), spec.norm_eps, spec.pretrained_cfg)
            with torch.device('meta'):
                reference = timm.create_model(name, pretrained=False, **spec.create_kwargs())
            mismatch = _swin_windows(model.backbone, reference, sizes)
            if mismatch is None:
                break
        if mismatch is not None:
            raise _refuse('backbone.window_size', model.backbone.stages[0].blocks[0].attn.window_size,
                          f'with img_size={kwargs["img_size"]}, patch_size={kwargs["patch_size"]}: {mismatch}; timm '
                          'cannot compute this (exportable: feature maps that are multiples of the window where '
                          'blocks shift)')
    else:
        with torch.device('meta'):
            reference = timm.create_model(name, pretrained=False, **spec.create_kwargs())
    check_state_dict(converted, reference.state_dict(), source=f"the export for timm's {name}")
    return spec, converted


def load_classifier(cfg: Config, checkpoint: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The full model of ``cfg`` (a pipeline config: its fine-tuned model) holding ``checkpoint``'s weights.

    The model is built on the meta device (no memory, no initialisation) and loads the weights strictly
    with ``assign=True``, through the backbone's own load hooks; the checkpoint is checked first
    (:func:`~mmincubation.checkpoint.load_fitting`: a single module, a meta model or weights of another shape
    are refused, the file named). Returns the model and the loaded checkpoint (``state_dict``, ``meta``).
    """
    from .engine.runner import phase_recipe
    from .engine.runner.fit_checks import build_on_meta
    if 'incubation' in cfg:
        cfg = phase_recipe(cfg, 'finetune')
    model = build_on_meta(cfg)
    loaded = load_fitting(checkpoint, model.state_dict(), holds='full')
    model.load_state_dict(loaded['state_dict'], strict=True, assign=True)
    return model.eval(), loaded


#: Metadata written here as JSON: the tag, the dataset's meta (class names), the timm spec of a timm export.
JSON_METADATA = (META_KEY, 'dataset_meta', 'timm')


def _metadata(meta: Mapping, source: str) -> dict[str, str]:
    """safetensors metadata (str -> str): the mmincubation tag and ``dataset_meta`` as JSON."""
    metadata = {'format': 'pt'}
    for key in JSON_METADATA[:2]:
        if meta.get(key) is not None:
            try:
                metadata[key] = json.dumps(meta[key], sort_keys=True)
            except TypeError as error:
                raise CheckpointError(f'{source}: meta.{key} is not JSON ({error})') from error
    return metadata


def _save_safetensors(state: Mapping[str, torch.Tensor], metadata: dict[str, str], out: Path) -> Path:
    save = _require('safetensors.torch').save
    tensors, storages = {}, set()
    for key, value in state.items():  # safetensors refuses tensors sharing memory: those are copied
        value = value.detach().cpu().contiguous()
        pointer = value.untyped_storage().data_ptr()
        tensors[key] = value.clone() if pointer in storages else value
        storages.add(pointer)
    data = save(tensors, metadata=metadata)
    return write_atomic(out, lambda f: f.write(data))


WEIGHT_SUFFIXES = ('.pth', '.safetensors')


def export_timm_file(cfg: Config, checkpoint: str | os.PathLike, out: str | os.PathLike,
                     force: bool = False, inputs: Sequence[str | os.PathLike] = ()) -> tuple[Path, Path, TimmSpec]:
    """Write ``checkpoint`` (weights of ``cfg``'s model) as a timm state dict to ``out`` and its spec beside it.

    ``out`` ending in ``.safetensors`` gets a safetensors file (metadata: the tag, ``dataset_meta`` and the
    spec, JSON), ``.pth`` a plain ``torch.save`` state dict; ``out`` + ``.json`` gets :meth:`TimmSpec.to_json`.
    Both are written atomically; existing ones are refused unless ``force`` (neither may be one of ``inputs``
    or the checkpoint). Returns both paths and the spec.
    """
    out = Path(out)
    if out.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f'output {out}: expected a file name ending in {" or ".join(WEIGHT_SUFFIXES)}')
    spec_path = out.with_name(out.name + '.json')
    for path in (out, spec_path):
        check_output(path, [checkpoint, *inputs], replace=force)
    model, loaded = load_classifier(cfg, checkpoint)
    preprocessor = cfg.get('data_preprocessor') or cfg.model.get('data_preprocessor')
    spec, state = timm_export(model, preprocessor, (loaded['meta'].get('dataset_meta') or {}).get('classes'))
    if out.suffix == '.safetensors':
        metadata = dict(_metadata(loaded['meta'], str(checkpoint)), timm=json.dumps(spec.to_json(), sort_keys=True))
        _save_safetensors(state, metadata, out)
    else:
        write_atomic(out, lambda f: torch.save(state, f))
    write_atomic(spec_path, lambda f: f.write((json.dumps(spec.to_json(), indent=2) + '\n').encode()))
    return out, spec_path, spec


def export_safetensors_file(checkpoint: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Path:
    """Write the state dict of ``checkpoint`` (any mmpretrain / mmincubation checkpoint) to ``out`` as safetensors.

    The metadata holds ``meta.mmincubation`` (the tag) and ``meta.dataset_meta`` as JSON strings
    (:func:`read_safetensors` gives them back). ``out`` must end in ``.safetensors``; an existing one is
    refused unless ``force``; the file is written atomically.
    """
    out = Path(out)
    if out.suffix != '.safetensors':
        raise CheckpointError(f'output {out}: expected a file name ending in .safetensors')
    check_output(out, [checkpoint], replace=force)
    loaded = load_weights(checkpoint)
    return _save_safetensors(loaded['state_dict'], _metadata(loaded['meta'], str(checkpoint)), out)


def read_safetensors(path: str | os.PathLike) -> dict:
    """A safetensors file as ``{'state_dict': ..., 'meta': ...}`` (as :func:`load_weights` returns a checkpoint):
    the tensors, and the metadata, :data:`JSON_METADATA` decoded (other entries stay strings)."""
    safetensors = _require('safetensors')
    load_file = _require('safetensors.torch').load_file
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'safetensors file {path} does not exist')
    try:
        with safetensors.safe_open(str(path), framework='pt') as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (safetensors.SafetensorError, OSError) as error:
        raise CheckpointError(f'cannot read safetensors file {path}: {error}') from error
    meta = {key: json.loads(value) if key in JSON_METADATA else value for key, value in metadata.items()
            if key != 'format'}
    return dict(state_dict=state, meta=meta)
