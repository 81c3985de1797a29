# UperNet on ADE20K (512x512 crops, 160k iterations, 8 GPUs x 2 images) with the incubated ViT-B/16 as
# the backbone: mmpretrain's VisionTransformer, feature maps of blocks 4, 6, 8 and 12 (out_indices
# 3, 5, 7, 11), mmseg's MultiLevelNeck (scales 4, 2, 1, 0.5), UPerHead + FCN auxiliary head, AdamW lr 1e-4,
# weight decay 0.05 and layer-wise LR decay 0.65 (the BEiT/MAE ADE20K recipe), drop path 0.1.
# Stock mmseg trains it; the only mmincubation code used is the LR-decay constructor.
#
# The backbone and its checkpoint (environment variable INCUBATED_CHECKPOINT, default the fine-tuned
# model of configs/incubate_vit_b.py): _base_/vit-b_incubated_backbone.py, here at 512x512.
# `model.pretrained` must stay None: it is an mmseg-only field that mmpretrain's ViT does not take.
_base_ = [
    'mmseg::vit/vit_vit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/vit-b_incubated_backbone.py',
]

custom_imports = dict(
    imports=['mmpretrain.models', 'mmincubation.engine.layer_decay'], allow_failed_imports=False)

crop_size = (512, 512)

# The heads resize their logits to pad_shape: exact only when the tokens cover exactly the padded image, so
# the whole-image test pads to a multiple of 32 (2 patches: the x0.5 level needs an even token count);
# mmseg crops the padding off before the metric. Training crops are 512 (32 tokens): exact already.
model = dict(
    pretrained=None,
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    backbone=dict(_base_.vit_b_backbone, _delete_=True, img_size=crop_size, out_indices=(3, 5, 7, 11)),
    neck=dict(in_channels=[768, 768, 768, 768], out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150),
    auxiliary_head=dict(in_channels=768, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='mmincubation.LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.65, num_layers=12))
