# The DeiT recipe at its reference batch of 512 images per step, for training a full ViT end to end:
# AdamW with lr 5e-4, weight decay 0.05 (none on biases, norms, class token and position embedding), a
# linear warmup from 1e-6 for 20 epochs then cosine decay to 1e-5, both stepped per epoch as timm's
# scheduler, 300 epochs, no EMA, no gradient clipping, FP32 (add --amp for mixed precision). It also
# sets the runtime: mmpretrain's, keeping only the last checkpoints (a ViT-H checkpoint with its AdamW
# state weighs about 7.6 GB).
# A schedule at another batch scales lr by DeiT's linear rule (lr = _base_.lr * batch / 512) and then
# sets it where this file used it: optim_wrapper.optimizer.lr and the warmup's start_factor, e.g.
#   optim_wrapper = dict(optimizer=dict(lr=lr))
#   param_scheduler = [dict(_base_.param_scheduler[0], start_factor=_base_.warmup_lr / lr), _base_.param_scheduler[1]]
# as schedules/deit_adamw_bs2048.py (ImageNet) and configs/cifar100/e2e_deit-t-128.py do.
_base_ = 'mmpretrain::_base_/default_runtime.py'

lr = 5e-4  # for 512 images per optimizer step
weight_decay = 0.05
warmup_epochs = 20
warmup_lr = 1e-6  # learning rate of the first epoch (timm's --warmup-lr)
min_lr = 1e-5
e2e_epochs = 300

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay, eps=1e-8, betas=(0.9, 0.999)),
    # as timm's optimizer factory: no weight decay on biases, norms, class token and position embedding
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
)
param_scheduler = [
    # from warmup_lr at epoch 0 to lr at epoch 19 (timm reaches lr at epoch 20: a negligible difference)
    dict(type='LinearLR', start_factor=warmup_lr / lr, by_epoch=True, begin=0, end=warmup_epochs),
    # `end` is left to the runner: each phase's max_epochs
    dict(type='CosineAnnealingLR', eta_min=min_lr, by_epoch=True, begin=warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=e2e_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# --auto-scale-lr multiplies lr by (GPUs x batch per GPU) / base_batch_size.
auto_scale_lr = dict(base_batch_size=512)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
