# UperNet on ADE20K (512x512 crops, 160k iterations, 8 GPUs x 2 images) with the incubated ViT-B/16 as
# the backbone: mmpretrain's VisionTransformer, feature maps of blocks 4, 6, 8 and 12 (out_indices
# 3, 5, 7, 11), mmseg's MultiLevelNeck (scales 4, 2, 1, 0.5), UPerHead + FCN auxiliary head, AdamW lr 1e-4,
# weight decay 0.05 and layer-wise LR decay 0.65 (the BEiT/MAE ADE20K recipe), drop path 0.1.
# Stock mmseg trains it; the only mmincubation code used is the LR-decay constructor.
#
# The checkpoint: the fine-tuned (or assembled) ImageClassifier of configs/incubate_vit_b.py; only
# its `backbone.*` weights are loaded (pos_embed resized from 224/16 to 512/16 by mmpretrain's ViT).
# Point at another one with the environment variable INCUBATED_CHECKPOINT (read when the config is
# loaded; `--cfg-options checkpoint=...` would NOT reach the nested init_cfg):
#   INCUBATED_CHECKPOINT=path/to/vit-b.pth python tools/train.py configs/downstream/<this file>
# (equivalently: --cfg-options model.backbone.init_cfg.checkpoint=path/to/vit-b.pth).
# `model.pretrained` must stay None: it is an mmseg-only field that mmpretrain's ViT does not take.
_base_ = 'mmseg::vit/vit_vit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(
    imports=['mmpretrain.models', 'mmincubation.engine.layer_decay'], allow_failed_imports=False)

checkpoint = '{{$INCUBATED_CHECKPOINT:work_dirs/incubate_vit_b/finetune/finetuned.pth}}'
crop_size = (512, 512)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='base',
        img_size=crop_size,
        patch_size=16,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        drop_rate=0.,
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=(3, 5, 7, 11),
        with_cls_token=True,  # the checkpoint has one; featmap outputs drop it
        final_norm=True,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[768, 768, 768, 768], out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150),
    auxiliary_head=dict(in_channels=768, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='mmincubation.LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.65, num_layers=12))
