# ViT-g/14 at 224x224 (16x16 patches of 14 px): mmpretrain's VisionTransformer with arch 'eva-g' (EVA's giant
# shape: width 1408, 40 blocks, 16 heads, MLP 6144), 1.01B parameters with the 1000-class head. qkv bias and
# LayerNorm eps 1e-6 as timm's vit_giant_patch14_224 (the same shape) and our ViT-B/L; ViT-H's exceptions (no qkv
# bias, eps 1e-5) only follow the old timm model its official checkpoint was trained as, and no official
# ViT-g run exists. Initialised as timm's, like every ViT here (./vit-base-p16_in1k.py).
# Drop path 0.7 for the full model (fine-tune and E2E). The official runs raise it with size on ImageNet-1K
# alone: 0.1 B (86M), 0.5 L (304M), 0.6 H (632M). ViT-g is 1.6x ViT-H on the same 1.28M images, so one step
# further, as H is one step beyond L (2.1x); mmpretrain's rate grows linearly over the blocks, so at 0.7 a
# ViT-g still keeps more residual branches per image on average (26 of 40) than ViT-H at 0.6 (22.4 of 32).
# Not tuned: nobody has trained a ViT-g from scratch on ImageNet-1K with this recipe (our guess; try 0.6-0.8).
_base_ = './vit-base-p16_in1k.py'

model = dict(
    backbone=dict(arch='eva-g', patch_size=14, drop_path_rate=0.7),
    head=dict(in_channels=1408))
