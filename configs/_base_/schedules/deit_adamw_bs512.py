# The DeiT recipe at its reference batch of 512 images per step, for training a full ViT end to end:
# AdamW with lr 5e-4, weight decay 0.05 (none on biases, norms, class token and position embedding), 300
# epochs, no EMA, no gradient clipping, bfloat16 mixed precision (./bf16.py: the official runs were FP32, and
# how to train so), and timm's cosine schedule
# as the official runs step it: once per epoch, over the whole run, a linear warm-up from 1e-6 over its
# first 20 epochs inside it (not restarted after it), down to 1e-5 (mmincubation.TimmCosineLR). It also
# sets the runtime: mmpretrain's, keeping only the last checkpoints (a ViT-H checkpoint with its AdamW
# state weighs about 7.6 GB).
# lr follows the actual batch by default, as in the official code (lr = 5e-4 x total batch / 512):
# auto_scale_lr multiplies it by (GPUs x batch per GPU) / base_batch_size. A schedule written for
# another batch sets lr = _base_.lr * batch / 512 and base_batch_size = that batch / gradient
# accumulation (MMEngine does not count accumulation), as schedules/deit_adamw_bs2048.py does.
# Turn scaling off with --cfg-options auto_scale_lr.enable=False.
_base_ = ['../default_runtime.py', './bf16.py']

lr = 5e-4  # for 512 images per optimizer step
weight_decay = 0.05
warmup_epochs = 20
warmup_lr = 1e-6  # learning rate of the first epoch (timm's --warmup-lr)
min_lr = 1e-5
e2e_epochs = 300

optim_wrapper = dict(
    _base_.bf16_optim_wrapper,  # AmpOptimWrapper in bfloat16
    optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay, eps=1e-8, betas=(0.9, 0.999)),
    # as timm's optimizer factory: no weight decay on biases, norms, class token and position embedding
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0), '.pos_embed': dict(decay_mult=0.0)}),
)
# warmup_lr and min_lr are absolute (timm's), so they stay put when lr is scaled. lag=1: the official
# loop calls timm's scheduler.step(epoch) after epoch `epoch`, so epoch e trains at lr(e - 1).
param_scheduler = [
    dict(type='mmincubation.TimmCosineLR', warmup=warmup_epochs, warmup_lr=warmup_lr, eta_min=min_lr, lag=1,
         by_epoch=True),  # `end` (the cosine's length) is left to the runner: each phase's max_epochs
]
# The same schedule without warm-up (the official fine-tuning: --warmup-epochs 0)
no_warmup_param_scheduler = [dict(param_scheduler[0], warmup=0)]
train_cfg = dict(by_epoch=True, max_epochs=e2e_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(enable=True, base_batch_size=512)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
