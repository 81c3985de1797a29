# Mask R-CNN with the incubated ViT-H/14 (configs/incubate_vit_h.py: no qkv bias, LayerNorm eps 1e-5): as the
# ViT-B config (see there for the settings; checkpoint via INCUBATED_CHECKPOINT or `checkpoint`) with ViTDet's
# ViT-H settings, drop path 0.5 and layer decay 0.9. Patches of 14 px give a 74x74 map at 1024 (input padded to 1036);
# SimpleFPN (in_stride=14) resamples it bilinearly onto the stride-16 grid (64x64), so the pyramid keeps
# strides 4..64: cell j takes the map exactly at pixel 16j+8, where anchors and RoIAlign expect it (token i
# is centred on pixel 14i+7). Exact because every input is padded to a multiple of 16 (pad_size_divisor=32,
# BatchFixedSizePad); see SimpleFPN's docstring.
# (ViTDet instead re-trains a 16 px patch embedding; loading 14x14 kernels into one is not possible.)
_base_ = './mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_vit_h/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(
        arch='huge',
        patch_size=14,
        qkv_bias=False,
        norm_cfg=dict(type='LN', eps=1e-5),
        drop_path_rate=0.5),
    neck=dict(in_channels=1280, in_stride=14))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9, num_layers=32))
