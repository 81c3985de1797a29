# End-to-end baseline: DINOv2's ViT-g/14 (1.14B parameters) trained from scratch on ImageNet-1K, supervised, for
# 300 epochs with the DeiT recipe of the official ViT-H runs (bfloat16, drop path 0.7), on FSDP with every block's
# activations recomputed, as configs/e2e_vit_g.py. Exactly the "e2e" phase of configs/incubate_dinov2_g.py.
_base_ = [
    './_base_/models/vit-giant-p14_dinov2_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/deit_adamw_bs2048_fsdp.py',
]

activation_checkpointing = [f'backbone.layers.{block}' for block in range(40)]  # every block of the 40
