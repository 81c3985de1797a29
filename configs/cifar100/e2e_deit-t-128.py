# DeiT-Tiny trained end to end on CIFAR-100: the baseline of configs/cifar100/incubate_deit-t-128.py
# (the paper's "DeiT-T-128" CIFAR-100 experiment) and the base it inherits. A plain mmpretrain config.
#
# Neither the official code nor its README gives the CIFAR-100 settings, so this recipe is our choice:
# - model: DeiT-Tiny (width 192, 3 heads, 12 blocks) on the 32x32 images with 4x4 patches (64 tokens
#   and the class token), qkv bias and LayerNorm eps 1e-6 as timm's DeiT: the ImageNet ViT-B base
#   (_base_/models/vit-base-p16_in1k.py) with its size, patches and classes changed.
# - data: mmpretrain's CIFAR-100 (random crop 32 with padding 4, flip) plus the DeiT augmentation of
#   the ImageNet runs: RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0,
#   label smoothing 0.1. No repeated augmentation: it spreads an image's repeats over GPUs, and this
#   recipe is sized for one GPU.
# - optimisation: the ImageNet recipe (AdamW, lr 5e-4 per 512 images, weight decay 0.05, warmup from
#   1e-6, cosine to 1e-5, stepped per epoch: _base_/schedules/deit_adamw_bs512.py) at batch 512 on one
#   GPU, so lr 5e-4; evaluation and a checkpoint every 5 epochs.
# - epochs: the ImageNet runs' proportions, cheap at this size: E2E 300; in the pipeline meta 300,
#   incubation 100 per module, fine-tune 100.
# Data: CIFAR100_ROOT=/path (default data/cifar100; mmpretrain downloads the dataset there if missing).
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    '../_base_/models/vit-base-p16_in1k.py',
    '../_base_/schedules/deit_adamw_bs512.py',  # the runtime too
]

data_root = '{{$CIFAR100_ROOT:data/cifar100}}'
num_gpus = 1
batch_per_gpu = 512
lr = _base_.lr * batch_per_gpu * num_gpus / 512  # DeiT's linear scaling rule
drop_path_rate = 0.1  # the full model's (E2E and fine-tune), DeiT's

model = dict(
    backbone=dict(arch='deit-tiny', img_size=32, patch_size=4, drop_path_rate=drop_path_rate),
    head=dict(num_classes=100, in_channels=192))

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

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [dict(_base_.param_scheduler[0], start_factor=_base_.warmup_lr / lr), _base_.param_scheduler[1]]
train_cfg = dict(val_interval=5)
auto_scale_lr = dict(base_batch_size=batch_per_gpu * num_gpus)

default_hooks = dict(checkpoint=dict(interval=5))
