# The DeiT recipe of the official Deep Incubation runs, for training a full ViT end to end: that of
# deit_adamw_bs512.py (AdamW, warmup then cosine, stepped per epoch, FP32) at an effective batch of
# 2048 on 8 GPUs, so lr 2e-3. This is the E2E baseline's schedule; schedules/incubation_in1k.py changes
# per phase only what differs.
_base_ = './deit_adamw_bs512.py'

num_gpus = 8  # GPUs of the official runs
effective_batch_size = 2048  # images per optimizer step = batch per GPU x GPUs x gradient accumulation
e2e_batch_per_gpu = 64  # the train_dataloader.batch_size of the imagenet_bs64_* dataset base
e2e_accumulation = effective_batch_size // (e2e_batch_per_gpu * num_gpus)  # 4
lr = _base_.lr * effective_batch_size / 512  # DeiT's linear scaling rule: 2e-3

optim_wrapper = dict(optimizer=dict(lr=lr), accumulative_counts=e2e_accumulation)
param_scheduler = [dict(_base_.param_scheduler[0], start_factor=_base_.warmup_lr / lr), _base_.param_scheduler[1]]
# --auto-scale-lr multiplies lr by (GPUs x batch per GPU) / base_batch_size: MMEngine does not count
# gradient accumulation, so the base is the reference run's batch per forward pass over all GPUs
# (2048 / accumulative_counts), which leaves lr unchanged on 8 GPUs.
auto_scale_lr = dict(base_batch_size=e2e_batch_per_gpu * num_gpus)
