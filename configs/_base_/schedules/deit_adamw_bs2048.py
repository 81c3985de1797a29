# The DeiT recipe of the official Deep Incubation runs, for training a full ViT end to end: AdamW with
# lr 5e-4 per 512 images at an effective batch of 2048 on 8 GPUs, a linear warmup then cosine decay,
# both stepped per epoch as timm's scheduler, no EMA, no gradient clipping, FP32 (add --amp for mixed
# precision). This is the E2E baseline's schedule; schedules/incubation_in1k.py changes per phase only
# what differs. It also sets the runtime: mmpretrain's, keeping only the last checkpoints (a ViT-H
# checkpoint with its AdamW state weighs about 7.6 GB).
_base_ = 'mmpretrain::_base_/default_runtime.py'

num_gpus = 8  # GPUs of the official runs
effective_batch_size = 2048  # images per optimizer step = batch per GPU x GPUs x gradient accumulation
e2e_batch_per_gpu = 64  # the train_dataloader.batch_size of the imagenet_bs64_* dataset base
e2e_accumulation = effective_batch_size // (e2e_batch_per_gpu * num_gpus)  # 4
lr = 5e-4 * effective_batch_size / 512  # DeiT's linear scaling rule: 2e-3
weight_decay = 0.05
warmup_epochs = 20
warmup_lr = 1e-6  # learning rate of the first epoch (timm's --warmup-lr)
min_lr = 1e-5
e2e_epochs = 300

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay, eps=1e-8, betas=(0.9, 0.999)),
    accumulative_counts=e2e_accumulation,
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
# --auto-scale-lr multiplies lr by (GPUs x batch per GPU) / base_batch_size: MMEngine does not count
# gradient accumulation, so the base is the reference run's batch per forward pass over all GPUs
# (2048 / accumulative_counts), which leaves lr unchanged on 8 GPUs.
auto_scale_lr = dict(base_batch_size=e2e_batch_per_gpu * num_gpus)

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
