# UperNet with the incubated ViT-H/14 (configs/incubate_vit_h.py: no qkv bias, LayerNorm eps 1e-5): as the
# ViT-B config (see there for the settings; checkpoint via INCUBATED_CHECKPOINT or `checkpoint`) with blocks
# 8, 16, 24, 32, layer decay 0.9 and drop path 0.3 (not tuned here).
# Exact strides: the heads resize their logits to the label size (loss) or pad_shape (predict_by_feat), which
# is only right when the tokens cover exactly that size: a 512 px batch gives 37 tokens covering 518 px
# (stretched onto 512: up to ~6 px off) and the x0.5 level halves 37 tokens into 18 cells (up to ~8 px off).
# So, keeping the recipe's 512 px random crop, every batch is padded (right/bottom, labels with 255, which
# both heads ignore) to a multiple of 28 px = 2 patches: 532x532 (38x38 tokens, the ViT's position grid) in
# training, size_divisor 28 for the whole-image test; every level then has stride 14 / scale exactly, and
# postprocess_result crops the padding off before the metric. Cost: 5.5% more tokens than 37x37.
# ViT-B/L (patch 16) train exactly on 512 crops (32 tokens) and pad their whole-image test to size_divisor 32.
_base_ = './upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_vit_h/finetune/finetuned.pth}}'
pad_size = 532  # the 512 crops padded to 38 patches of 14 px (another image_size: the next multiple of 28)
model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=28)),
    backbone=dict(arch='huge', patch_size=14, qkv_bias=False, norm_cfg=dict(type='LN', eps=1e-5),
                  out_indices=(7, 15, 23, 31), drop_path_rate=0.3),
    neck=dict(in_channels=[1280, 1280, 1280, 1280], out_channels=1280),
    decode_head=dict(in_channels=[1280, 1280, 1280, 1280]),
    auxiliary_head=dict(in_channels=1280))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9, num_layers=32))
