"""mmpretrain's ``ViTEVA02`` (EVA-02): a ``VisionTransformer`` with rotary position embeddings (RoPE) and a
SwiGLU FFN (sub-LN optional).

Blocks ``backbone.layers.N`` (``EVA02EndcoderLayer``, pre-norm: ``x + attn.proj(...)``, then
``x + mlp.w3(...)``: the SwiGLU's output layer, after its optional sub-LN ``mlp.norm``); each block's
attention holds the backbone's RoPE tables as buffers (``layers.N.attn.rope.freqs_cos`` / ``freqs_sin``,
functions of the token grid alone), and so does the backbone itself (``backbone.rope.*``, with the stem).
Stem and tail as the ViT's. The stage depth is ``arch['num_layers']`` (named archs: ``ViTEVA02.arch_zoo``).
Source: ``mmpretrain/models/backbones/vit_eva02.py`` and ``models/utils/swiglu_ffn.py`` (1.2.0).
"""
from ..layout import BlockNaming
from .base import BackboneSpec, register

EVA02 = register(BackboneSpec(
    BlockNaming(
        name='eva02',
        block_key='backbone.layers.{block}.',
        stem_prefixes=('backbone.patch_embed.', 'backbone.cls_token', 'backbone.pos_embed', 'backbone.pre_norm.',
                       'backbone.rope.'),
        tail_prefixes=('backbone.ln1.', 'backbone.ln2.', 'neck.', 'head.'),
        residual_outputs=('attn.proj.', 'mlp.w3.'),
    ),
    classes=('mmpretrain.ViTEVA02', ),
    arch_keys=('embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'),
    depth_key='num_layers',
    patch_weight='patch_embed.projection.weight',
    resized_on_load=('pos_embed', ),  # as the ViT (its parent class) interpolates it
    # mmpretrain's EVA-02 classifiers pool the tokens (out_type='avg_featmap') and normalise the pooled feature
    # (ln2); a segmentation backbone returning feature maps has no ln2 and leaves it unused
    unused_on_load=('ln2.', ),
))
