# UperNet with the incubated ViT-H/14 (configs/incubate_vit_h.py: no qkv bias, LayerNorm eps 1e-5): as the
# ViT-B config (see there, checkpoint via INCUBATED_CHECKPOINT) with blocks 8, 16, 24, 32, layer decay 0.9
# and drop path 0.3 (not tuned here). 512 px crops give a 37x37 map (input padded to 518); the decode
# head resizes its logits to the label size, so no stride has to be exact.
_base_ = './upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:work_dirs/incubate_vit_h/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(arch='huge', patch_size=14, qkv_bias=False, norm_cfg=dict(type='LN', eps=1e-5),
                  out_indices=(7, 15, 23, 31), drop_path_rate=0.3, init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[1280, 1280, 1280, 1280], out_channels=1280),
    decode_head=dict(in_channels=[1280, 1280, 1280, 1280]),
    auxiliary_head=dict(in_channels=1280))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9, num_layers=32))
