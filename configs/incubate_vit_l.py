# Deep Incubation of ViT-L/16 on ImageNet-1K, the whole pipeline from one config (the official recipe):
# meta model (4 x 1 block, 300 epochs) -> 4 modules of 6 blocks incubated independently (100 epochs
# each) -> assembly -> fine-tune (100 epochs, drop path 0.5); the "e2e" phase is configs/e2e_vit_l.py.
#   python tools/train.py configs/incubate_vit_l.py                              # the whole pipeline
#   python tools/train.py configs/incubate_vit_l.py --phase incubate --module 2  # one module, one job
# Phase settings: _base_/schedules/incubation_in1k.py. Data: IMAGENET_ROOT=/path/to/imagenet.
_base_ = [
    './_base_/models/vit-large-p16_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/incubation_in1k.py',
]
