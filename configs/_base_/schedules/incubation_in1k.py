# Deep Incubation of a ViT on ImageNet-1K as the official runs (LeapLabTHU/Deep-Incubation, TRAINING.md).
# Every phase keeps the DeiT recipe of deit_adamw_bs2048.py (AdamW, lr 2e-3 for 2048 images per step on
# 8 GPUs and following the actual batch, timm's per-epoch cosine over the phase to 1e-5 with a 20-epoch
# warm-up from 1e-6 inside it) and changes only what this `incubation` section says:
#   phase     network                               epochs  drop path    batch/GPU x GPUs x accumulation
#   meta      K=4 modules of 1 block                 300    0            256 x 8 x 1
#   incubate  meta model with module k real          100    0.1          128 x 8 x 2
#             (depth/4 blocks: 3 B, 6 L, 8 H)
#   finetune  the assembled model                    100    the model's   64 x 8 x 4, no warmup
#   e2e       the same full model, from scratch      300    the model's   64 x 8 x 4  (the baseline)
# The full model's drop path rate (fine-tune and E2E: 0.1 B, 0.5 L, 0.6 H) is in its model base.
# No gradient clipping in any phase: the official fine-tune command passes --clip-grad 1.0, but its FP32
# training path (engine.py, use_amp=0) never clips; only the AMP path would.
# Each phase's auto_scale_lr.base_batch_size is its batch per forward pass over the 8 reference GPUs, so
# lr is 2e-3 there and follows (GPUs x batch per GPU) elsewhere, as the official 5e-4 x total batch / 512.
_base_ = ['./deit_adamw_bs2048.py', '../incubation_runner.py']  # the latter: a pipeline for stock tools too

num_modules = 4

meta_epochs = 300
meta_drop_path_rate = 0.
meta_batch_per_gpu = 256
meta_accumulation = _base_.effective_batch_size // (meta_batch_per_gpu * _base_.num_gpus)  # 1

incubate_epochs = 100
incubate_drop_path_rate = 0.1
incubate_batch_per_gpu = 128
incubate_accumulation = _base_.effective_batch_size // (incubate_batch_per_gpu * _base_.num_gpus)  # 2

finetune_epochs = 100
finetune_batch_per_gpu = 64
finetune_accumulation = _base_.effective_batch_size // (finetune_batch_per_gpu * _base_.num_gpus)  # 4

incubation = dict(
    num_modules=num_modules,
    meta=dict(
        model=dict(backbone=dict(drop_path_rate=meta_drop_path_rate)),
        train_dataloader=dict(batch_size=meta_batch_per_gpu),
        optim_wrapper=dict(accumulative_counts=meta_accumulation),
        auto_scale_lr=dict(base_batch_size=meta_batch_per_gpu * _base_.num_gpus),
        train_cfg=dict(max_epochs=meta_epochs)),
    incubate=dict(
        model=dict(backbone=dict(drop_path_rate=incubate_drop_path_rate)),
        train_dataloader=dict(batch_size=incubate_batch_per_gpu),
        optim_wrapper=dict(accumulative_counts=incubate_accumulation),
        auto_scale_lr=dict(base_batch_size=incubate_batch_per_gpu * _base_.num_gpus),
        train_cfg=dict(max_epochs=incubate_epochs)),
    finetune=dict(
        train_dataloader=dict(batch_size=finetune_batch_per_gpu),
        optim_wrapper=dict(accumulative_counts=finetune_accumulation),
        auto_scale_lr=dict(base_batch_size=finetune_batch_per_gpu * _base_.num_gpus),
        # no warmup: timm's cosine from the first epoch
        param_scheduler=_base_.no_warmup_param_scheduler,
        train_cfg=dict(max_epochs=finetune_epochs)),
    # the baseline is this config as it stands, the same as configs/e2e_vit_*.py
    e2e=dict(),
)
