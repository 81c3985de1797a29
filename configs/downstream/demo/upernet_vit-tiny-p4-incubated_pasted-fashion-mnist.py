# Downstream demo (CPU, about a minute): UperNet semantic segmentation with the demo's incubated ViT
# (configs/incubate_demo_fashion_mnist.py: 8 blocks, width 64, patch 4, grayscale, trained on 28x28
# Fashion-MNIST) on pasted Fashion-MNIST (1-3 real items, 21-35 px, pasted onto 64x64 canvases; label 0 =
# background, 1..10 = the Fashion-MNIST classes: tools/dataset_converters/make_pasted_fashion_mnist.py), evaluated
# with mIoU over the 11 classes. It inherits the ViT-B recipe of configs/downstream/ (MultiLevelNeck + UPerHead +
# FCN auxiliary head, AdamW + layer-wise LR decay) and shrinks it to the demo's scale: feature maps of blocks 2,
# 4, 6 and 8 at stride 4, resampled to strides 2, 4, 8 and 16; 64 channels; 1-channel images; 200 iterations of
# 8 images, LR 1e-3 (tools/downstream_demo.py compares incubated vs. end-to-end backbones with it).
#
# Settings (placeholders filled in by mmincubation.DownstreamRunner: a child config or --cfg-options that sets
# one reaches every field that depends on it; see ../_base_/vit-b_incubated_backbone.py): checkpoint (`make demo`'s
# fine-tuned model in this repository, or INCUBATED_CHECKPOINT, e.g. work_dirs/incubate_demo_fashion_mnist/e2e/
# e2e.pth), image_size (side of the square images and crops), classes (label 0 first: background), data_root
# (images/ and annotations/ with training/ and validation/ PNGs), in_channels / color_type / mean / std as in
# the Mask R-CNN demo (3 channels inflate the grey patch embedding).
_base_ = '../upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=_base_.custom_imports.imports + ['mmincubation.models.channel_inflation'])

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../../work_dirs/incubate_demo_fashion_mnist/finetune/finetuned.pth}}'  # noqa: E501
image_size = 64
classes = ('background', 'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
           'Bag', 'Ankle boot')
data_root = 'data/pasted_fashion_mnist/'
in_channels = 1
color_type = 'grayscale'
mean = [72.94]
std = [90.02]
channels = 64
norm_cfg = dict(type='BN', requires_grad=True)
# mmseg initialises the classifier (conv_seg) with std 0.01; in runs this short that left both heads predicting
# background everywhere (mIoU 7-10 after 150-400 iterations, even on a frozen backbone); std 0.1 (about
# PyTorch's default for a 64 -> 11 1x1 conv) escapes that within a few dozen iterations.
head_init = dict(type='Normal', std=0.1, override=dict(name='conv_seg'))
warmup_iters = 10
max_iters = 200
batch_size = 8

model = dict(
    data_preprocessor=dict(mean='${mean}', std='${std}', bgr_to_rgb=False),
    backbone=dict(
        type='mmincubation.InflatingVisionTransformer',
        arch=dict(_delete_=True, embed_dims=64, num_layers=8, num_heads=2, feedforward_channels=256),
        patch_size=4,
        in_channels='${in_channels}',
        drop_path_rate=0.,
        out_indices=(1, 3, 5, 7)),
    neck=dict(in_channels=[64] * 4, out_channels=channels, scales=[2, 1, 0.5, 0.25]),
    decode_head=dict(in_channels=[channels] * 4, channels=channels, norm_cfg=norm_cfg, init_cfg=head_init),
    auxiliary_head=dict(in_channels=channels, channels=32, norm_cfg=norm_cfg, init_cfg=head_init))

train_pipeline = [
    dict(type='LoadImageFromFile', color_type='${color_type}'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='${color_type}'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', reduce_zero_label=False, img_suffix='.png', seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.8, num_layers=8))

train_cfg = dict(max_iters='${max_iters}', val_interval='${max_iters}')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end='${warmup_iters}'),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin='${warmup_iters}', end='${max_iters}', by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval='${max_iters}', max_keep_ckpts=1))
randomness = dict(seed=0)
