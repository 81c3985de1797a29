# UperNet with the incubated ViT-L/16 (configs/incubate_vit_l.py): as the ViT-B config (see there for the
# settings; checkpoint via INCUBATED_CHECKPOINT or `checkpoint`) with blocks 8, 12, 16, 24, layer decay 0.9
# and drop path 0.2 (a usual ViT-L setting, not tuned here).
_base_ = './upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_vit_l/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(arch='large', out_indices=(7, 11, 15, 23), drop_path_rate=0.2),
    neck=dict(in_channels=[1024, 1024, 1024, 1024], out_channels=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024]),
    auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9, num_layers=24))
