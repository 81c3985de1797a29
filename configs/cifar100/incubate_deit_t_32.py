# Deep Incubation of DeiT-T-32 (DeiT-Tiny's width, 32 blocks, 4x4 patches) on CIFAR-100 (Table 2: 75.3
# against 72.8 end to end), the whole pipeline from one config: meta model (4 x 1 block) -> 4 modules
# of 8 blocks incubated independently -> assembly -> fine-tune; the "e2e" phase is
# configs/cifar100/e2e_deit_t_32.py. Recipe, schedule and K as configs/cifar100/incubate_deit_t_128.py
# (set in e2e_deit_t_128.py; the paper gives CIFAR epochs for DeiT-T-128 only, DeiT-T-32 uses the same):
#   phase     network                               epochs  drop path  lr schedule (timm's cosine)
#   meta      4 modules of 1 block                   300    0          warm-up 20
#   incubate  meta model with module k real           50    0.1        warm-up 20
#             (1 + 1 + 1 + 8 blocks)
#   finetune  the assembled 32 blocks                 50    0.1        no warm-up
#   e2e       the same 32 blocks, from scratch       157    0.1        warm-up 20 (equal cost)
# Sizes (MMEngine's count, FLOPs = multiply-adds, 32x32 input, 100 classes; tests/test_configs.py checks
# the parameters and the full model's FLOPs):
#   network             blocks  parameters                GFLOPs
#   meta model             4     1.82M                    0.123
#   hybrid (module k)     11     4.94M (3.58M trained)    0.336
#   full model            32    14.28M                    0.977   (paper: 14.5M, 1.0G)
#   python tools/train.py configs/cifar100/incubate_deit_t_32.py
_base_ = ['./e2e_deit_t_32.py', '../_base_/incubation_runner.py']  # the latter: a pipeline for stock tools too

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
    # the baseline is this config as it stands (e2e_deit_t_32.py): E2E at the pipeline's cost
    e2e=dict(),
)
