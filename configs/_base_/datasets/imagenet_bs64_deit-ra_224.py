# ImageNet-1K with the DeiT recipe used by every phase of Deep Incubation: mmpretrain's DeiT/Swin
# pipeline (RandomResizedCrop 224 bicubic, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing
# 0.25 per pixel; test: resize 256 + center crop 224), Mixup/CutMix in the model, and repeated
# augmentation (DeiT's RASampler: each image 3 times per epoch, on different GPUs).
#
# data_root holds train/ and val/ (one folder per class, or a meta/{train,val}.txt list). Point it
# elsewhere with the IMAGENET_ROOT environment variable, or with
#   --cfg-options train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR \
#                 test_dataloader.dataset.data_root=DIR
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

data_root = '{{$IMAGENET_ROOT:data/imagenet}}'
num_repeats = 3  # repeated augmentation, as DeiT

train_dataloader = dict(
    batch_size=64,
    num_workers=10,
    pin_memory=True,
    # Workers restarted each epoch (a few seconds per epoch): persistent workers carry their random augmentation
    # streams from epoch to epoch, which a resumed phase cannot restore, so it would not train what an
    # uninterrupted one does (the pipeline refuses them in training phases).
    persistent_workers=False,
    dataset=dict(data_root=data_root),
    sampler=dict(type='RepeatAugSampler', shuffle=True, num_repeats=num_repeats),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=10,
    pin_memory=True,
    persistent_workers=True,
    dataset=dict(data_root=data_root),
)
test_dataloader = val_dataloader
