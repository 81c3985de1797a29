# The incubated ViT-B/16 as a plain downstream backbone (the Mask/Faster R-CNN and UperNet ViT-B configs, and
# through them the ViT-L/H ones, which change its size): mmpretrain's VisionTransformer built as the
# classifier of configs/incubate_vit_b.py (_base_/models/vit-base-p16_in1k.py: qkv bias, LayerNorm eps
# 1e-6), returning feature maps without the class token, drop path 0.1, position embedding resized
# bicubically to the input size. A config takes it with its own output blocks:
#   backbone=dict(_base_.vit_b_backbone, _delete_=True, out_indices=...)
#
# Settings. Fields that depend on a setting name it by a placeholder ('${image_size}', '${len(classes)}',
# '${data_root}annotations/...'), filled in from the final config by mmincubation.DownstreamRunner (the
# runner_type below; mmincubation/engine/downstream.py). So a child config or --cfg-options that sets a
# setting reaches every field that depends on it (MMEngine alone evaluates a base's variables once, and a
# child's `image_size = 128` would leave backbone.img_size and the pipelines at the base's value).
#   checkpoint   the fine-tuned (or assembled) ImageClassifier of configs/incubate_vit_b.py; only its
#                `backbone.*` weights are loaded (pos_embed resized from 224/16 to the input size). Default:
#                that pipeline's product in this repository's work_dirs/ (whatever the working directory),
#                or the environment variable INCUBATED_CHECKPOINT, or in a child config / on the command line:
#                  python tools/train.py configs/downstream/<config> --cfg-options checkpoint=path/to/vit-b.pth
#   image_size   side of the square input (training crops / batch padding, test resize), px: each config's own
#   classes      class names: the datasets' metainfo and the heads' num_classes follow them
#   data_root    the data set's folder (annotation files are named relative to it)
checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../../work_dirs/incubate_vit_b/finetune/finetuned.pth}}'
vit_b_backbone = dict(
    type='mmpretrain.VisionTransformer',
    arch='base',
    img_size=('${image_size}', '${image_size}'),
    patch_size=16,
    qkv_bias=True,
    norm_cfg=dict(type='LN', eps=1e-6),
    drop_rate=0.,
    drop_path_rate=0.1,
    out_type='featmap',
    with_cls_token=True,  # the checkpoint has one; featmap outputs drop it
    final_norm=True,
    interpolate_mode='bicubic',
    init_cfg=dict(type='Pretrained', checkpoint='${checkpoint}', prefix='backbone.'))
runner_type = 'mmincubation.DownstreamRunner'
# `num_classes` of every head against the data set's classes, before the first iteration and each
# validation (mmdet's hook; it fits mmseg's EncoderDecoder as well, which has no such check of its own).
custom_hooks = [dict(type='mmdet.NumClassCheckHook')]
