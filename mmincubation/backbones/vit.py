"""mmpretrain's ``VisionTransformer`` and the classes with its state-dict naming and blocks (DeiT, DeiT-III, ours).

Blocks ``backbone.layers.N`` (mmpretrain's ``TransformerEncoderLayer``, pre-norm:
``x + attn.proj(...)``, then ``x + ffn.layers[1](...)``; with ``layer_scale_init_value`` (DINOv2-style,
DeiT-III) the branches end in ``gamma1`` / ``gamma2`` after those layers, so zeroing the layers still
zeroes the branch; DINOv2-g's SwiGLU FFN, ``layer_cfgs=dict(ffn_type='swiglu_fused')``, ends in
``ffn.w3``). Stem: patch embedding, class / distillation tokens, position embedding, the pre-norm
(CLIP-style ``pre_norm``). Tail: final norms (``ln1``; ``ln2`` of ``out_type='avg_featmap'``), neck, head.
Source: ``mmpretrain/models/backbones/vision_transformer.py`` (1.2.0).

The official code's checkpoints (timm's ``VisionTransformer`` key space) map onto ours by the tables
below; the official converter (:mod:`mmincubation.convert_official`) and the export to timm
(:mod:`mmincubation.export`) read them.
"""
from ..layout import BlockNaming
from .base import BackboneSpec, register
from .widening import widen_vit

VIT = register(BackboneSpec(
    BlockNaming(
        name='vit',
        block_key='backbone.layers.{block}.',
        stem_prefixes=('backbone.patch_embed.', 'backbone.cls_token', 'backbone.dist_token',
                       'backbone.pos_embed', 'backbone.pre_norm.'),
        tail_prefixes=('backbone.ln1.', 'backbone.ln2.', 'neck.', 'head.'),
        # the FFN ends in ffn.layers.1 (mmcv's FFN) or ffn.w3 (layer_cfgs=dict(ffn_type='swiglu_fused'), DINOv2-g)
        residual_outputs=('attn.proj.', ('ffn.layers.1.', 'ffn.w3.')),
    ),
    # DeiT3: its DeiT3TransformerEncoderLayer has the ViT layer's keys (layer scale as gamma1 / gamma2)
    classes=('mmpretrain.VisionTransformer', 'mmpretrain.DistilledVisionTransformer', 'mmpretrain.DeiT3',
             'mmincubation.TimmInitVisionTransformer', 'mmincubation.InflatingVisionTransformer'),
    arch_keys=('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'),
    depth_key='num_layers',
    patch_weight='patch_embed.projection.weight',
    # the ViT interpolates its position embedding to the configured input size when loading
    resized_on_load=('pos_embed', ),
    widen=widen_vit,
))

#: The official (timm) key space; stem and tail prefixes decide which stage may hold a key.
OFFICIAL_NAMING = BlockNaming(name='official', block_key='blocks.{block}.',
                              stem_prefixes=('patch_embed.', 'cls_token', 'pos_embed'),
                              tail_prefixes=('norm.', 'head.'))

#: Official stem/tail key -> ours.
OFFICIAL_TO_OURS = {
    'cls_token': 'backbone.cls_token',
    'pos_embed': 'backbone.pos_embed',
    'patch_embed.proj.weight': 'backbone.patch_embed.projection.weight',
    'patch_embed.proj.bias': 'backbone.patch_embed.projection.bias',
    'norm.weight': 'backbone.ln1.weight',
    'norm.bias': 'backbone.ln1.bias',
    'head.weight': 'head.layers.head.weight',
    'head.bias': 'head.layers.head.bias',
}

#: Official key inside a block -> ours. ``attn.qkv.bias`` is optional: official ViT-H has none.
BLOCK_TO_OURS = {
    'norm1.weight': 'ln1.weight',
    'norm1.bias': 'ln1.bias',
    'attn.qkv.weight': 'attn.qkv.weight',
    'attn.qkv.bias': 'attn.qkv.bias',
    'attn.proj.weight': 'attn.proj.weight',
    'attn.proj.bias': 'attn.proj.bias',
    'norm2.weight': 'ln2.weight',
    'norm2.bias': 'ln2.bias',
    'mlp.fc1.weight': 'ffn.layers.0.0.weight',
    'mlp.fc1.bias': 'ffn.layers.0.0.bias',
    'mlp.fc2.weight': 'ffn.layers.1.weight',
    'mlp.fc2.bias': 'ffn.layers.1.bias',
}
OPTIONAL_BLOCK_KEYS = frozenset({'attn.qkv.bias'})
