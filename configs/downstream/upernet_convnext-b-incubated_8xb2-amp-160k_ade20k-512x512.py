# UperNet on ADE20K (512x512 crops, 160k iterations, 8 GPUs x 2 images) with the incubated ConvNeXt-B
# (configs/incubate_convnext_b.py) as the backbone: mmseg's ConvNeXt-B UperNet recipe as it stands
# (convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py: AMP, AdamW lr 1e-4, stage-wise LR decay 0.9,
# drop path 0.4, sliding-window test). mmseg's config builds mmpretrain's ConvNeXt, which takes the classifier
# checkpoint's `backbone.*` weights; the output norms of stages 0-2 start fresh (a classifier has only the
# last stage's).
# Setting: checkpoint (INCUBATED_CHECKPOINT, default the fine-tuned model of configs/incubate_convnext_b.py in
# this repository's work_dirs/, or --cfg-options checkpoint=path/to/convnext-b.pth), filled in by
# mmincubation.DownstreamRunner, which also checks that it fits before anything is built.
_base_ = 'mmseg::convnext/convnext-base_upernet_8xb2-amp-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmpretrain.models', 'mmincubation.engine.downstream'], allow_failed_imports=False)

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_convnext_b/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='${checkpoint}', prefix='backbone.')))

runner_type = 'mmincubation.DownstreamRunner'
custom_hooks = [dict(type='mmdet.NumClassCheckHook')]
