# UperNet on ADE20K (512x512 crops, 160k iterations, 8 GPUs x 2 images) with the incubated Swin-B
# (configs/incubate_swin_b.py or incubate_swin_b_deit3.py) as the backbone: mmseg's Swin-B UperNet recipe as
# it stands (AdamW lr 6e-5, poly schedule, drop path 0.3). mmseg's SwinTransformer takes the classifier
# checkpoint's `backbone.*` weights; the output norms of stages 0-2 start fresh (a classifier has only the
# last stage's).
# Setting: checkpoint (INCUBATED_CHECKPOINT, default the fine-tuned model of configs/incubate_swin_b.py in
# this repository's work_dirs/, or --cfg-options checkpoint=path/to/swin-b.pth), filled in by
# mmincubation.DownstreamRunner, which also checks that it fits before anything is built.
_base_ = 'mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmincubation.engine.downstream'], allow_failed_imports=False)

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_swin_b/finetune/finetuned.pth}}'
model = dict(
    backbone=dict(drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint='${checkpoint}', prefix='backbone.')))

runner_type = 'mmincubation.DownstreamRunner'
custom_hooks = [dict(type='mmdet.NumClassCheckHook')]
