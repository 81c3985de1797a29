# End-to-end baseline: ConvNeXt-L trained from scratch on ImageNet-1K with mmpretrain's own recipe as it stands
# (convnext/convnext-large_64xb64_in1k.py: the recipe of configs/e2e_convnext_b.py with the model of
# _base_/models/convnext/convnext-large.py, drop path 0.5, and 64 GPUs x 64 images = 4096 per step; mmpretrain's
# metafile has only a converted checkpoint for it, 84.30 top-1). Exactly the "e2e" phase of
# configs/incubate_convnext_l.py; changed as in configs/e2e_convnext_b.py: bfloat16, data root, checkpoints kept,
# visualizer.
_base_ = ['mmpretrain::convnext/convnext-large_64xb64_in1k.py', './_base_/schedules/bf16.py']

optim_wrapper = _base_.bf16_optim_wrapper  # bfloat16 mixed precision (mmpretrain's: FP32)

data_root = '{{$IMAGENET_ROOT:data/imagenet}}'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))

visualizer = dict(_base_.visualizer, _delete_=True)  # without `_scope_`: see configs/e2e_convnext_b.py
visualizer.pop('_scope_')
