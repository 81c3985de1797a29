# DINOv2's ViT-g/14 at 224x224 for supervised ImageNet-1K training: mmpretrain's VisionTransformer with arch
# 'dinov2-g' (width 1536, 40 blocks, 24 heads), layer scale 1e-5 and the fused SwiGLU FFN (hidden 4096), as
# mmpretrain's dinov2/vit-giant-p14_dinov2-pre_headless.py builds it, at 224 px (DINOv2 pretrains at 224 too;
# mmpretrain's 518 px is its last high-resolution stage) with a 1000-class head: backbone 1.135B parameters
# (1.136B at 518 px, mmpretrain's metafile), 1.136B in all. qkv bias and LayerNorm eps 1e-6 as DINOv2;
# initialised as timm's (trunc-normal 0.02 Linear weights, as DINOv2's own init), the layer scales at 1e-5.
# Drop path 0.7 for the full model (fine-tune and E2E), as ViT-g (./vit-giant-p14_in1k.py: why), a model of
# the same depth and size on the same 1.28M images; DINOv2's own 0.4 was for self-supervised pretraining on
# 142M images. Not tuned.
_base_ = './vit-base-p16_in1k.py'

model = dict(
    backbone=dict(arch='dinov2-g', patch_size=14, layer_scale_init_value=1e-5,
                  layer_cfgs=dict(ffn_type='swiglu_fused'), drop_path_rate=0.7),
    head=dict(in_channels=1536))
