# End-to-end baseline of Deep Incubation: ViT-g/14 (1.01B parameters) trained from scratch on ImageNet-1K for 300
# epochs with the DeiT recipe of the official ViT-H runs (effective batch 2048 = 64 per GPU x 8 GPUs x 4
# accumulation, lr 2e-3, drop path 0.7, bfloat16), on FSDP with every block's activations recomputed
# (_base_/schedules/deit_adamw_bs2048_fsdp.py). Exactly the "e2e" phase of configs/incubate_vit_g.py, which shares
# its bases; tools/train.py (ours or mmpretrain's) trains it on mmincubation's PhaseFlexibleRunner.
_base_ = [
    './_base_/models/vit-giant-p14_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/deit_adamw_bs2048_fsdp.py',
]

activation_checkpointing = [f'backbone.layers.{block}' for block in range(40)]  # every block of the 40
