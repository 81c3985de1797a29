# End-to-end baseline: EVA-02-B/14 (mmpretrain's model at 224 px, drop path 0.1) trained from scratch on
# ImageNet-1K for 300 epochs with the DeiT recipe of the official Deep Incubation ViT runs, as
# configs/e2e_vit_b.py (why this recipe: configs/incubate_eva02_b.py). A plain mmpretrain config; it is
# exactly the "e2e" phase of configs/incubate_eva02_b.py, which shares its bases.
_base_ = [
    './_base_/models/eva02-base-p14_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/deit_adamw_bs2048.py',
]
