# Downstream demo (CPU, minutes): Mask R-CNN with the demo's incubated ViT (configs/incubate_demo_fashion_mnist.py:
# 8 blocks, width 64, patch 4, grayscale, trained on 28x28 Fashion-MNIST) as a plain backbone, on pasted
# Fashion-MNIST (1-3 real items, 21-35 px, pasted onto 64x64 canvases:
# tools/dataset_converters/make_pasted_fashion_mnist.py), evaluated with COCO bbox and segm AP. It inherits the
# ViT-B recipe of configs/downstream/ (SimpleFPN, channel LayerNorm, AdamW + layer-wise LR decay) and shrinks it
# to the demo's scale:
# - patch 4 gives a stride-4 map, so the pyramid is built around stride 4: SimpleFPN scales (1, 0.5) plus one
#   subsampled level -> strides 4, 8, 16; anchors 24/48/96 px;
# - 64 channels in neck and heads, a 2-fc box head (the 4-conv one is most of the CPU time at this size), fewer
#   proposals and RoIs; 1-channel images (mean/std of Fashion-MNIST);
# - 150 iterations of 8 images, LR 1e-3 (tools/downstream_demo.py compares incubated vs. end-to-end backbones).
#
# Settings (placeholders filled in by mmincubation.DownstreamRunner: a child config or --cfg-options that sets
# one reaches every field that depends on it; see ../_base_/vit-b_incubated_backbone.py):
#   checkpoint      the demo classifier (a plain mmpretrain ImageClassifier; only `backbone.*` is loaded, pos_embed
#                   resized from 7x7 to image_size/4 tokens): `make demo`'s fine-tuned model in this repository,
#                   or INCUBATED_CHECKPOINT, e.g. the E2E baseline work_dirs/incubate_demo_fashion_mnist/e2e/e2e.pth
#   image_size      side of the (square) images, px: the backbone's position grid and the test resize
#   classes         class names: the datasets' metainfo and both heads' num_classes
#   data_root       the COCO-style data set: annotations/instances_{train,val}.json, images/{training,validation}/
#   in_channels     image channels: 1 (grey, as the checkpoint); 3 for RGB photos, whose patch embedding is then
#                   inflated from the grey one (mmincubation.InflatingVisionTransformer); with color_type 'color'
#                   and a mean/std per channel
_base_ = '../mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py'

custom_imports = dict(imports=_base_.custom_imports.imports + ['mmincubation.models.channel_inflation'])

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../../work_dirs/incubate_demo_fashion_mnist/finetune/finetuned.pth}}'  # noqa: E501
image_size = 64
classes = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
           'Ankle boot')
data_root = 'data/pasted_fashion_mnist/'
in_channels = 1
color_type = 'grayscale'
mean = [72.94]
std = [90.02]
channels = 64
warmup_iters = 10
max_iters = 150
batch_size = 8

model = dict(
    data_preprocessor=dict(mean='${mean}', std='${std}', bgr_to_rgb=False, pad_size_divisor=32,
                           batch_augments=None),
    backbone=dict(
        type='mmincubation.InflatingVisionTransformer',
        arch=dict(_delete_=True, embed_dims=64, num_layers=8, num_heads=2, feedforward_channels=256),
        patch_size=4,
        in_channels='${in_channels}',
        drop_path_rate=0.),
    neck=dict(in_channels=64, out_channels=channels, scale_factors=(1.0, 0.5), num_outs=3, in_stride=4,
              base_stride=4),
    rpn_head=dict(
        in_channels=channels,
        feat_channels=channels,
        anchor_generator=dict(scales=[6], strides=[4, 8, 16])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels, featmap_strides=[4, 8, 16]),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=channels, conv_out_channels=channels,
                       fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=channels, featmap_strides=[4, 8, 16]),
        mask_head=dict(in_channels=channels, conv_out_channels=channels)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=50)))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', color_type='${color_type}', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask='${with_mask}'),
    dict(type='Resize', scale=('${image_size}', '${image_size}'), keep_ratio=True),  # a no-op on the canvases
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='${color_type}', backend_args=backend_args),
    dict(type='Resize', scale=('${image_size}', '${image_size}'), keep_ratio=True),  # a no-op on the canvases
    dict(type='LoadAnnotations', with_bbox=True, with_mask='${with_mask}'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/training/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/validation/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='${data_root}annotations/instances_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',  # the 1x config's AMP needs a GPU
    optimizer=dict(lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.8, num_layers=8),
    clip_grad=dict(max_norm=5.0))

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters='${max_iters}', val_interval='${max_iters}')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end='${warmup_iters}'),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin='${warmup_iters}', end='${max_iters}'),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval='${max_iters}', max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
