# The DeiT recipe of the official Deep Incubation runs, for training a full ViT end to end: that of
# deit_adamw_bs512.py (AdamW, timm's cosine with a 20-epoch warm-up inside it, stepped per epoch, bfloat16)
# at an effective batch of 2048 on 8 GPUs, so lr 2e-3. This is the E2E baseline's schedule;
# schedules/incubation_in1k.py changes per phase only what differs.
_base_ = './deit_adamw_bs512.py'

num_gpus = 8  # GPUs of the official runs
effective_batch_size = 2048  # images per optimizer step = batch per GPU x GPUs x gradient accumulation
e2e_batch_per_gpu = 64  # the train_dataloader.batch_size of the imagenet_bs64_* dataset base
e2e_accumulation = effective_batch_size // (e2e_batch_per_gpu * num_gpus)  # 4
lr = _base_.lr * effective_batch_size / 512  # DeiT's linear scaling rule: 2e-3

optim_wrapper = dict(optimizer=dict(lr=lr), accumulative_counts=e2e_accumulation)
# lr follows the actual batch (enabled in the base): MMEngine multiplies it by (GPUs x batch per GPU) /
# base_batch_size and does not count gradient accumulation, so the base is the reference run's batch per
# forward pass over all GPUs (2048 / accumulative_counts): lr stays 2e-3 on 8 GPUs and is 2.5e-4 on one,
# as the official code's 5e-4 x (batch per GPU x accumulation x GPUs) / 512. Changing accumulative_counts
# does not rescale lr: scale optim_wrapper.optimizer.lr with it.
auto_scale_lr = dict(base_batch_size=e2e_batch_per_gpu * num_gpus)
