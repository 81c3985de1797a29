# Mask R-CNN on COCO with the incubated ConvNeXt-B (configs/incubate_convnext_b.py) as the backbone: mmdet's
# ConvNeXt Mask R-CNN recipe (convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py: FPN on the four
# stages, multi-scale training with DETR-style crops, 36 epochs, AMP, AdamW lr 1e-4 with layer-wise LR decay)
# at ConvNeXt-B's size. mmdet ships it for ConvNeXt-T only; for B it takes the ConvNeXt authors' own COCO
# settings of ConvNeXt-B (facebookresearch/ConvNeXt, cascade_mask_rcnn_convnext_base_..._3x_coco_in1k.py, their
# only ConvNeXt-B detection recipe): drop path 0.7, layer-wise decay 0.8 over 12 layer groups. The 12 groups
# are needed, not tuned: mmdet's ConvNeXt layer ids put stage 2's blocks in groups of 3 (27 blocks: ids 3-11),
# and the T config's 6 would give the later blocks rates above the base lr (0.95^-4). Not tuned here.
# The backbone is mmpretrain's ConvNeXt (through mmdet's custom_imports, as mmdet's own config): it takes the
# classifier checkpoint's `backbone.*` weights; the output norms of stages 0-2 (norm0-norm2), which a classifier
# does not have, start fresh, as with any ImageNet-pretrained ConvNeXt. layer_scale_init_value=1.0 (mmdet's)
# only sets the initial layer scales, which the checkpoint replaces.
# Setting: checkpoint (INCUBATED_CHECKPOINT, default the fine-tuned model of configs/incubate_convnext_b.py in
# this repository's work_dirs/, or --cfg-options checkpoint=path/to/convnext-b.pth), filled in by
# mmincubation.DownstreamRunner, which also checks that it fits before anything is built.
_base_ = 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'

custom_imports = dict(imports=['mmpretrain.models', 'mmincubation.engine.downstream'], allow_failed_imports=False)

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_convnext_b/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='${checkpoint}', prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12))

runner_type = 'mmincubation.DownstreamRunner'
custom_hooks = [dict(type='mmdet.NumClassCheckHook')]
