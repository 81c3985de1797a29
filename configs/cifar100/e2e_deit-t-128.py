# DeiT-Tiny trained end to end on CIFAR-100: the baseline of configs/cifar100/incubate_deit-t-128.py
# (the paper's "DeiT-T-128" CIFAR-100 experiment) and the base it inherits. A plain mmpretrain config.
#
# Neither the official code nor its README gives the CIFAR-100 settings, so this recipe is our choice:
# - model: DeiT-Tiny (width 192, 3 heads, 12 blocks) on the 32x32 images with 4x4 patches (64 tokens
#   and the class token), qkv bias and LayerNorm eps 1e-6 as timm's DeiT.
# - data: mmpretrain's CIFAR-100 (random crop 32 with padding 4, flip) plus the DeiT augmentation of
#   the ImageNet runs: RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0,
#   label smoothing 0.1. No repeated augmentation: it spreads an image's repeats over GPUs, and this
#   recipe is sized for one GPU.
# - optimisation: the ImageNet recipe (AdamW, lr 5e-4 per 512 images, weight decay 0.05, warmup from
#   1e-6, cosine to 1e-5, stepped per epoch) at batch 512 on one GPU, so lr 5e-4.
# - epochs: the ImageNet runs' proportions, cheap at this size: E2E 300; in the pipeline meta 300,
#   incubation 100 per module, fine-tune 100.
# Data: CIFAR100_ROOT=/path (default data/cifar100; mmpretrain downloads the dataset there if missing).
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]

data_root = '{{$CIFAR100_ROOT:data/cifar100}}'
num_gpus = 1
batch_per_gpu = 512
lr = 5e-4 * batch_per_gpu * num_gpus / 512  # DeiT's linear scaling rule
weight_decay = 0.05
warmup_epochs = 20
warmup_lr = 1e-6  # learning rate of the first epoch
min_lr = 1e-5
e2e_epochs = 300
drop_path_rate = 0.1  # the full model's (E2E and fine-tune), DeiT's

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch='deit-tiny',
        img_size=32,
        patch_size=4,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        drop_rate=0.,
        drop_path_rate=drop_path_rate,
        out_type='cls_token',
        final_norm=True),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=192,
        hidden_dim=None,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# CIFAR images are loaded as RGB, in the order of data_preprocessor's mean and std.
rgb_mean = _base_.data_preprocessor.mean
rgb_std = _base_.data_preprocessor.std
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in rgb_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=rgb_mean,
        fill_std=rgb_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_per_gpu,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(batch_size=500, num_workers=4, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_lr / lr, by_epoch=True, begin=0, end=warmup_epochs),
    dict(type='CosineAnnealingLR', eta_min=min_lr, by_epoch=True, begin=warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=e2e_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=batch_per_gpu * num_gpus)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=2))
