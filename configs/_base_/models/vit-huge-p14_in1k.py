# ViT-H/14 at 224x224 (16x16 patches of 14 px). The official code builds it as timm's old
# `vit_huge_patch14_224`: no qkv bias and PyTorch's default LayerNorm eps 1e-5, unlike B and L.
# Drop path 0.6 for the full model (the official fine-tune and E2E setting for ViT-H).
_base_ = './vit-base-p16_in1k.py'

model = dict(
    backbone=dict(arch='huge', patch_size=14, qkv_bias=False, norm_cfg=dict(type='LN', eps=1e-5),
                  drop_path_rate=0.6),
    head=dict(in_channels=1280))
