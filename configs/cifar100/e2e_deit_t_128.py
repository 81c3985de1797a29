# DeiT-T-128 trained end to end on CIFAR-100 at the cost of its incubation pipeline: the baseline of
# configs/cifar100/incubate_deit_t_128.py (the paper's Table 2 and efficiency figure) and the base it
# inherits; configs/cifar100/{e2e,incubate}_deit_t_32.py inherit this recipe with 32 blocks. A plain
# mmpretrain config.
#
# DeiT-T-128 is DeiT-Tiny's width (192, 3 heads, MLP 768) with 128 blocks and 4x4 patches on the 32x32
# images (64 tokens and the class token). Paper, Table 2: 57.2M parameters, 3.9 GFLOPs; this model:
# 56.98M parameters, 3.905 GFLOPs (MMEngine's count, FLOPs = multiply-adds as the paper's;
# tests/test_configs.py). The paper's parameter counts (57.2M, and 14.5M for DeiT-T-32) fit a
# 1000-class head: 57.16M / 14.45M.
#
# Neither the official code nor its README gives the CIFAR-100 settings (LeapLabTHU/Deep-Incubation has
# DeiT's `--data-set CIFAR` loader but no CIFAR model, script or module split), so this recipe is our
# choice:
# - model: qkv bias, LayerNorm eps 1e-6 and the initialisation of timm's DeiT: the ImageNet ViT-B base
#   (_base_/models/vit-base-p16_in1k.py) with its size, patches and classes changed.
# - data: mmpretrain's CIFAR-100 (random crop 32 with padding 4, as the official code's CIFAR path, and
#   flip) plus the DeiT augmentation of the ImageNet runs: RandAugment rand-m9-mstd0.5-inc1, random
#   erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1. No repeated augmentation: it spreads an
#   image's repeats over GPUs, and this recipe is sized for one GPU.
# - optimisation: the official recipe of _base_/schedules/deit_adamw_bs512.py (AdamW, lr 5e-4 per 512
#   images, weight decay 0.05, timm's per-epoch cosine to 1e-5 over the phase with a 20-epoch warm-up
#   from 1e-6 inside it, no clipping; bfloat16 mixed precision where the paper trained FP32:
#   _base_/schedules/bf16.py) at its reference batch, 512 on one GPU, so lr 5e-4; evaluation and a
#   checkpoint every 5 epochs. A DeiT-T-128 step at batch 512 in FP32 needs about 70 GiB (extrapolated
#   from CPU runs at batch 8 and 16; bfloat16 saves activation memory, not measured here): on smaller
#   GPUs set num_gpus = 2 and batch_per_gpu = 256 (same lr).
# - the incubation pipeline's schedule, set below (incubate_deit_t_*.py read it from here because each
#   E2E baseline's length is computed from it): the official phases with the paper's CIFAR epochs.
#   K = 4 modules; meta model 300 epochs, drop path 0; each module 50 epochs, drop path 0.1; fine-tune
#   50 epochs, drop path 0.1, no warm-up. Phases with a warm-up keep the official 20 epochs
#   (--warmup-epochs 20), in a 25-epoch incubation too. The paper's efficiency figure for DeiT-T-128
#   (incubation + fine-tune epochs -> top-1): 25+25 -> 72.8, 50+50 -> 77.2 (Table 2), 100+100 -> 78.0.
#   For another point set incubate_epochs and finetune_epochs below: both models' pipelines and E2E
#   baselines follow.
# - E2E epochs: the pipeline's cost, counted as the other equal-cost configs count it
#   (configs/incubate_demo_fashion_mnist.py): blocks in the trained network x epochs, meta pretraining
#   included, rounded up to whole epochs of the full model:
#       K x meta + K x (K - 1 + depth / K) x incubate + depth x finetune    block-epochs
#       DeiT-T-128: 25+25 -> 62, 50+50 -> 115, 100+100 -> 219 E2E epochs (DeiT-T-32: 97, 157, 275)
#   The paper's E2E-DeiT points for DeiT-T-128 are 63.3 / 69.4 / 71.9 at about 3.6 / 7.2 / 10.7 A100
#   hours, against about 3.2 / 6.0 / 8.0 for incubation 25+25 / 50+50 / 100+100 (read off its figure;
#   Table 2: 7.2 and 6.0); it gives no E2E epochs.
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

# The incubation pipeline (incubate_deit_t_*.py).
num_modules = 4  # K; the paper does not give it for CIFAR, see incubate_deit_t_128.py
meta_epochs = 300
meta_drop_path_rate = 0.
incubate_epochs = 50  # per module; 25, 50, 100: the paper's efficiency figure
incubate_drop_path_rate = 0.1
finetune_epochs = 50  # = incubate_epochs in the paper's figure

depth = 128
incubation_cost = (num_modules * meta_epochs
                   + num_modules * (num_modules - 1 + depth // num_modules) * incubate_epochs
                   + depth * finetune_epochs)  # 14600 block-epochs
e2e_epochs = -(-incubation_cost // depth)  # 115

model = dict(
    backbone=dict(
        # DeiT-Tiny's width (mmpretrain's 'deit-tiny' arch) with `depth` blocks
        arch=dict(_delete_=True, embed_dims=192, num_layers=depth, num_heads=3, feedforward_channels=768),
        img_size=32,
        patch_size=4,
        drop_path_rate=drop_path_rate),
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
    persistent_workers=False,  # a resume cannot restore persistent workers' random streams (see the ImageNet base)
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(batch_size=500, num_workers=4, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=lr))
train_cfg = dict(max_epochs=e2e_epochs, val_interval=5)
auto_scale_lr = dict(base_batch_size=batch_per_gpu * num_gpus)

default_hooks = dict(checkpoint=dict(interval=5))
