# ViT-L/16 at 224x224 (timm `vit_large_patch16_224`: qkv bias, LayerNorm eps 1e-6); all else as ViT-B.
# Drop path 0.5 for the full model (the official fine-tune and E2E setting for ViT-L).
_base_ = './vit-base-p16_in1k.py'

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5),
    head=dict(in_channels=1024))
