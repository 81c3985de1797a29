# Deep Incubation of ViT-g/14 on ImageNet-1K (1.01B parameters, 40 blocks of width 1408), the whole pipeline from
# one config, with the official ViT-H recipe: meta model (4 x 1 block, 300 epochs) -> 4 modules of 10 blocks
# incubated independently (100 epochs each) -> assembly -> fine-tune (100 epochs, drop path 0.7); the "e2e" phase
# is configs/e2e_vit_g.py. No official run: the paper stops at ViT-H.
#   python tools/train.py configs/incubate_vit_g.py                              # the whole pipeline
#   python tools/train.py configs/incubate_vit_g.py --phase incubate --module 2  # one module, one job
# Model: _base_/models/vit-giant-p14_in1k.py (arch and drop path: why). Phases: _base_/schedules/incubation_in1k.py
# (every phase bfloat16: _base_/schedules/bf16.py); runners and strategies per phase (modules on DDP, fine-tune
# and E2E on FSDP with activation checkpointing): _base_/schedules/incubation_in1k_fsdp.py.
# Data: IMAGENET_ROOT=/path/to/imagenet.
_base_ = [
    './_base_/models/vit-giant-p14_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/incubation_in1k_fsdp.py',
]
