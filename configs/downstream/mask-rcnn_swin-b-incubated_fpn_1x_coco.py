# Mask R-CNN on COCO with the incubated Swin-B (configs/incubate_swin_b.py or incubate_swin_b_deit3.py) as
# the backbone: mmdet's Swin Mask R-CNN recipe as it stands (FPN on the four stages, 12 epochs, AdamW lr
# 1e-4, no weight decay on norms and position tables) at Swin-B's size, drop path 0.3.
# The backbone is mmdet's SwinTransformer: it takes the classifier checkpoint's `backbone.*` weights (same
# names as mmpretrain's); the output norms of stages 0-2 (norm0-norm2), which a classifier does not have,
# start fresh, as with any ImageNet-pretrained Swin.
# Setting: checkpoint (INCUBATED_CHECKPOINT, default the fine-tuned model of configs/incubate_swin_b.py in
# this repository's work_dirs/, or --cfg-options checkpoint=path/to/swin-b.pth), filled in by
# mmincubation.DownstreamRunner, which also checks that it fits before anything is built.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

custom_imports = dict(imports=['mmincubation.engine.downstream'], allow_failed_imports=False)

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_swin_b/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        drop_path_rate=0.3,
        convert_weights=False,  # our checkpoints have mmpretrain's (= mmdet's) names, not the official Swin's
        init_cfg=dict(type='Pretrained', checkpoint='${checkpoint}', prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

runner_type = 'mmincubation.DownstreamRunner'
custom_hooks = [dict(type='mmdet.NumClassCheckHook')]
