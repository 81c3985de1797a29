# End-to-end baseline of Deep Incubation: ViT-L/16 trained from scratch on ImageNet-1K for 300 epochs with
# the DeiT recipe (effective batch 2048 = 64 per GPU x 8 GPUs x 4 accumulation, lr 2e-3, drop path 0.5).
# A plain mmpretrain config: tools/train.py trains it with an ordinary Runner. It is exactly the "e2e"
# phase of configs/incubate_vit_l.py, which shares its bases.
_base_ = [
    './_base_/models/vit-large-p16_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/deit_adamw_bs2048.py',
]
