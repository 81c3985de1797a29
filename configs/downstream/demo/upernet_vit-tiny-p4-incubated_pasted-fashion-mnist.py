# Downstream demo (CPU, about a minute): UperNet semantic segmentation with the demo's incubated ViT
# (configs/incubate_demo_fashion_mnist.py: 8 blocks, width 64, patch 4, grayscale, trained on 28x28
# Fashion-MNIST) on pasted Fashion-MNIST (1-3 real items, 21-35 px, pasted onto 64x64 canvases; label 0 =
# background, 1..10 = the Fashion-MNIST classes: tools/dataset_converters/make_pasted_fashion_mnist.py), evaluated
# with mIoU over the 11 classes. It inherits the ViT-B recipe of configs/downstream/ (MultiLevelNeck + UPerHead +
# FCN auxiliary head, AdamW + layer-wise LR decay) and shrinks it to the demo's scale: feature maps of blocks 2,
# 4, 6 and 8 at stride 4, resampled to strides 2, 4, 8 and 16; 64 channels; 1-channel images; 200 iterations of
# 8 images, LR 1e-3 (tools/downstream_demo.py compares incubated vs. end-to-end backbones with it).
# The checkpoint (a plain mmpretrain ImageClassifier; only `backbone.*` is loaded, pos_embed resized from 7x7 to
# 16x16 tokens) comes from INCUBATED_CHECKPOINT when set, e.g. the E2E baseline of the demo:
#   INCUBATED_CHECKPOINT=work_dirs/incubate_demo_fashion_mnist/e2e/e2e.pth python tools/train.py <this file>
_base_ = '../upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:work_dirs/incubate_demo_fashion_mnist/finetune/finetuned.pth}}'
data_root = 'data/pasted_fashion_mnist/'
canvas = 64
crop_size = (canvas, canvas)
classes = ('background', 'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
           'Bag', 'Ankle boot')
palette = [[0, 0, 0], [220, 20, 60], [119, 11, 32], [0, 0, 142], [0, 0, 230], [106, 0, 228], [0, 60, 100],
           [0, 80, 100], [0, 0, 70], [0, 0, 192], [250, 170, 30]]
metainfo = dict(classes=classes, palette=palette)
channels = 64
norm_cfg = dict(type='BN', requires_grad=True)
# mmseg initialises the classifier (conv_seg) with std 0.01; in runs this short that left both heads predicting
# background everywhere (mIoU 7-10 after 150-400 iterations, even on a frozen backbone); std 0.1 (about
# PyTorch's default for a 64 -> 11 1x1 conv) escapes that within a few dozen iterations.
head_init = dict(type='Normal', std=0.1, override=dict(name='conv_seg'))
max_iters = 200
batch_size = 8

model = dict(
    data_preprocessor=dict(mean=[72.94], std=[90.02], bgr_to_rgb=False, size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=64, num_layers=8, num_heads=2, feedforward_channels=256),
        img_size=crop_size,
        patch_size=4,
        in_channels=1,
        drop_path_rate=0.,
        out_indices=(1, 3, 5, 7),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[64] * 4, out_channels=channels, scales=[2, 1, 0.5, 0.25]),
    decode_head=dict(in_channels=[channels] * 4, channels=channels, num_classes=len(classes), norm_cfg=norm_cfg,
                     init_cfg=head_init),
    auxiliary_head=dict(in_channels=channels, channels=32, num_classes=len(classes), norm_cfg=norm_cfg,
                        init_cfg=head_init))

train_pipeline = [
    dict(type='LoadImageFromFile', color_type='grayscale'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='grayscale'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, reduce_zero_label=False,
               img_suffix='.png', seg_map_suffix='.png')
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

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=10, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
