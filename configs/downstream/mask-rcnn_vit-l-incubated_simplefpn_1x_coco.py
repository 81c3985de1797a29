# Mask R-CNN with the incubated ViT-L/16 (configs/incubate_vit_l.py): as the ViT-B config (see there for the
# settings; checkpoint via INCUBATED_CHECKPOINT or `checkpoint`) with ViTDet's ViT-L settings: drop path 0.4,
# layer decay 0.8.
_base_ = './mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_vit_l/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.4),
    neck=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8, num_layers=24))
