# Mask R-CNN on COCO with the incubated ViT-B/16 as a plain backbone, ViTDet style: a simple feature
# pyramid (mmincubation.SimpleFPN) on the last block, conv RPN/RoI heads with channel LayerNorm,
# large-scale-jitter training at 1024x1024, AdamW with layer-wise LR decay 0.7, drop path 0.1.
# Stock mmdet trains it; the backbone is mmpretrain's VisionTransformer and the mmincubation code used is
# the neck, the LR-decay constructor and the runner that fills in the settings (imported by `custom_imports`).
#
# Settings (see _base_/vit-b_incubated_backbone.py): checkpoint (INCUBATED_CHECKPOINT, default the
# fine-tuned model of configs/incubate_vit_b.py), image_size, classes, data_root; with_mask and coco_metric
# (the Faster R-CNN configs drop the masks). Schedule: 12 epochs, 8 GPUs x 2 images, lr 1e-4.
# Not ViTDet: global attention in every block (mmpretrain's ViT has no window attention / rel-pos).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    './_base_/vit-b_incubated_backbone.py',
    './_base_/coco_classes.py',
]

custom_imports = dict(
    imports=['mmpretrain.models', 'mmincubation.models.necks', 'mmincubation.engine.layer_decay',
             'mmincubation.engine.downstream'],
    allow_failed_imports=False)

image_size = 1024
data_root = 'data/coco/'
with_mask = True
coco_metric = ['bbox', 'segm']
norm_cfg = dict(type='mmpretrain.LN2d', eps=1e-6, requires_grad=True)
num_classes = '${len(classes)}'
square = ('${image_size}', '${image_size}')

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32, batch_augments=[dict(type='BatchFixedSizePad', size=square, pad_mask=True)]),
    backbone=dict(_base_.vit_b_backbone, _delete_=True, out_indices=-1),
    neck=dict(
        _delete_=True,
        type='mmincubation.SimpleFPN',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5,
        in_stride=16,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg,
                       num_classes=num_classes),
        mask_head=dict(norm_cfg=norm_cfg, num_classes=num_classes)))

backend_args = None
# Large-scale jitter (as mmdet's common/lsj-*_coco-instance.py), every batch padded to image_size.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask='${with_mask}'),
    dict(type='RandomResize', scale=square, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=square, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=square, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask='${with_mask}'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(data_root='${data_root}', metainfo=dict(classes='${classes}'))
train_dataloader = dict(batch_size=2, num_workers=2, dataset=dict(**dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(**dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='${data_root}annotations/instances_val2017.json', metric='${coco_metric}')
test_evaluator = val_evaluator

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='mmincubation.LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(layer_decay_rate=0.7, num_layers=12))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
