# Deep Incubation of EVA-02-L/14 on ImageNet-1K: the phases and recipe of configs/incubate_vit_l.py (the
# official ViT-L runs; why the ViT recipe for EVA-02: configs/incubate_eva02_b.py) with mmpretrain's EVA-02-L
# (_base_/models/eva02-large-p14_in1k.py: 304.3M parameters at 224 px, drop path 0.5 for the full model);
# E2E: configs/e2e_eva02_l.py. Module split as ViT-L: K=4 modules of 6 blocks, meta model 4 x 1 block.
#   python tools/train.py configs/incubate_eva02_l.py --phase incubate --module 2  # one module, one job
_base_ = [
    './_base_/models/eva02-large-p14_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/incubation_in1k.py',
]
