# End-to-end baseline: EVA-02-L/14 (mmpretrain's model at 224 px, drop path 0.5) trained from scratch on
# ImageNet-1K for 300 epochs with the DeiT recipe of the official ViT-L runs, as configs/e2e_vit_l.py; exactly
# the "e2e" phase of configs/incubate_eva02_l.py.
_base_ = [
    './_base_/models/eva02-large-p14_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/deit_adamw_bs2048.py',
]
