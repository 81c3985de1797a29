# UperNet on ADE20K (512x512 crops, 160k iterations, 8 GPUs x 2 images) with the incubated ViT-B/16 as
# the backbone: mmpretrain's VisionTransformer, feature maps of blocks 4, 6, 8 and 12 (out_indices
# 3, 5, 7, 11), mmseg's MultiLevelNeck (scales 4, 2, 1, 0.5), UPerHead + FCN auxiliary head, AdamW lr 1e-4,
# weight decay 0.05 and layer-wise LR decay 0.65 (the BEiT/MAE ADE20K recipe), drop path 0.1.
# Stock mmseg trains it; the mmincubation code used is the LR-decay constructor and the runner that fills in
# the settings.
#
# Settings (see _base_/vit-b_incubated_backbone.py): checkpoint (INCUBATED_CHECKPOINT, default the fine-tuned
# model of configs/incubate_vit_b.py), image_size (the square training crop), img_scale (the (w, h) that
# images are resized to fit, mmseg's (2048, 512) for ADE20K), classes (with background if the data set
# labels it), data_root; pad_size (the side the ViT's position grid and training batches are padded to:
# image_size here, ViT-H pads to whole pairs of 14 px patches).
# `model.pretrained` must stay None: it is an mmseg-only field that mmpretrain's ViT does not take.
_base_ = [
    'mmseg::vit/vit_vit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py',
    './_base_/vit-b_incubated_backbone.py',
    './_base_/ade20k_classes.py',
]

custom_imports = dict(
    imports=['mmpretrain.models', 'mmincubation.engine.layer_decay', 'mmincubation.engine.downstream'],
    allow_failed_imports=False)

image_size = 512
pad_size = '${image_size}'
img_scale = (2048, 512)
data_root = 'data/ade/ADEChallengeData2016'
num_classes = '${len(classes)}'
padded = ('${pad_size}', '${pad_size}')

# The heads resize their logits to pad_shape: exact only when the tokens cover exactly the padded image, so
# the whole-image test pads to a multiple of 32 (2 patches: the x0.5 level needs an even token count);
# mmseg crops the padding off before the metric. Training crops are 512 (32 tokens): exact already.
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=padded, test_cfg=dict(size_divisor=32)),
    backbone=dict(_base_.vit_b_backbone, _delete_=True, img_size=padded, out_indices=(3, 5, 7, 11)),
    neck=dict(in_channels=[768, 768, 768, 768], out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=num_classes),
    auxiliary_head=dict(in_channels=768, num_classes=num_classes))

# mmseg's ADE20K pipelines (_base_/datasets/ade20k.py) with the settings
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale='${img_scale}', ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=('${image_size}', '${image_size}'), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale='${img_scale}', keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(data_root='${data_root}', metainfo=dict(classes='${classes}'))
train_dataloader = dict(dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='mmincubation.LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.65, num_layers=12))
