# End-to-end baseline: ConvNeXt-B trained from scratch on ImageNet-1K with mmpretrain's own recipe as it stands
# (convnext/convnext-base_32xb128_in1k.py, 83.66 top-1 in mmpretrain's metafile): the model of
# _base_/models/convnext/convnext-base.py (drop path 0.5, layer scale 1e-6, Mixup 0.8 / CutMix 1.0, label
# smoothing 0.1), the Swin data pipeline (RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, bicubic
# random-resized crop 224; test resize 256, crop 224), AdamW lr 4e-3 for 4096 images per step (32 GPUs x 128;
# weight decay 0.05, none on norms and biases), a 20-epoch linear warm-up per iteration then cosine to 1e-5
# per epoch, 300 epochs, EMA of the weights (momentum 1e-4), no gradient clipping. lr 4e-3 is for 4096 images
# per step and stays put on fewer GPUs, as in mmpretrain: tools/train.py --auto-scale-lr scales it by the actual
# batch (auto_scale_lr.base_batch_size 4096). A plain mmpretrain config; it is exactly the "e2e" phase of
# configs/incubate_convnext_b.py. Changed here: bfloat16 mixed precision where mmpretrain trains FP32
# (_base_/schedules/bf16.py, which says how to go back), and, none of them in what is trained, the data root
# (IMAGENET_ROOT=/path/to/imagenet), only the last 2 epoch checkpoints kept (mmpretrain keeps every one, about
# 1 GB each with the AdamW state), the visualizer (below).
_base_ = ['mmpretrain::convnext/convnext-base_32xb128_in1k.py', './_base_/schedules/bf16.py']

optim_wrapper = _base_.bf16_optim_wrapper  # bfloat16 mixed precision (mmpretrain's: FP32)

data_root = '{{$IMAGENET_ROOT:data/imagenet}}'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))

# mmpretrain's visualizer less the `_scope_` MMEngine adds to a `pkg::` base's dicts, which mmpretrain's
# browse_dataset.py cannot take (why: _base_/default_runtime.py, the runtime of our other pipelines)
visualizer = dict(_base_.visualizer, _delete_=True)
visualizer.pop('_scope_')
