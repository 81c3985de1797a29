# Deep Incubation of DeiT-T-128 (DeiT-Tiny's width, 128 blocks, 4x4 patches) on CIFAR-100, the paper's
# largest gain (Table 2: 77.2 against 69.4 end to end), the whole pipeline from one config: meta model
# (4 x 1 block) -> 4 modules of 32 blocks incubated independently -> assembly -> fine-tune; the "e2e"
# phase is configs/cifar100/e2e_deit_t_128.py, which holds the shared recipe, the schedule variables
# and why they were chosen. Every phase keeps batch 512 on one GPU and lr 5e-4, no clipping,
# bfloat16 mixed precision (the paper: FP32; _base_/schedules/bf16.py says how to train so).
#   phase     network                               epochs  drop path  lr schedule (timm's cosine)
#   meta      4 modules of 1 block                   300    0          warm-up 20
#   incubate  meta model with module k real           50    0.1        warm-up 20
#             (1 + 1 + 1 + 32 blocks)
#   finetune  the assembled 128 blocks                50    0.1        no warm-up
#   e2e       the same 128 blocks, from scratch      115    0.1        warm-up 20 (equal cost)
# Epochs: the paper's efficiency figure for DeiT-T-128 (incubation + fine-tune epochs -> top-1) is
# 25+25 -> 72.8, 50+50 -> 77.2, 100+100 -> 78.0; 50+50 is the default. For another point set
# incubate_epochs and finetune_epochs in e2e_deit_t_128.py (the E2E epochs follow: 62, 115, 219).
# K = 4 (modules of 32 blocks): the paper does not give K for CIFAR and the official code has no CIFAR
# settings. Every official script splits into 4 modules of depth/4 blocks whatever the depth (ViT-B/L/H:
# 12 to 32 blocks), and K = 4 keeps the meta model at 4 blocks, 3 % of the full model's FLOPs, while
# each incubation job trains a hybrid of 35 blocks, 27 % of the full model.
# Sizes (MMEngine's count, FLOPs = multiply-adds, 32x32 input, 100 classes; tests/test_configs.py checks
# the parameters and the full model's FLOPs):
#   network             blocks  parameters                GFLOPs
#   meta model             4     1.82M                    0.123
#   hybrid (module k)     35    15.61M (14.26M trained)   1.068
#   full model           128    56.98M                    3.905   (paper: 57.2M, 3.9G)
#   python tools/train.py configs/cifar100/incubate_deit_t_128.py
_base_ = ['./e2e_deit_t_128.py', '../_base_/incubation_runner.py']  # the latter: a pipeline for stock tools too

incubation = dict(
    num_modules=_base_.num_modules,
    meta=dict(
        model=dict(backbone=dict(drop_path_rate=_base_.meta_drop_path_rate)),
        train_cfg=dict(max_epochs=_base_.meta_epochs)),
    incubate=dict(
        model=dict(backbone=dict(drop_path_rate=_base_.incubate_drop_path_rate)),
        train_cfg=dict(max_epochs=_base_.incubate_epochs)),
    finetune=dict(
        param_scheduler=_base_.no_warmup_param_scheduler,  # the official fine-tuning: no warm-up
        train_cfg=dict(max_epochs=_base_.finetune_epochs)),
    # the baseline is this config as it stands (e2e_deit_t_128.py): E2E at the pipeline's cost
    e2e=dict(),
)
