# The incubated ViT-B/16 as a plain downstream backbone (the Mask R-CNN and UperNet ViT-B configs, and
# through them the ViT-L/H ones, which change its size): mmpretrain's VisionTransformer built as the
# classifier of configs/incubate_vit_b.py (_base_/models/vit-base-p16_in1k.py: qkv bias, LayerNorm eps
# 1e-6), returning feature maps without the class token, drop path 0.1, position embedding resized
# bicubically to the input size. A config takes it with its own input size and output blocks:
#   backbone=dict(_base_.vit_b_backbone, _delete_=True, img_size=..., out_indices=...)
#
# The checkpoint: the fine-tuned (or assembled) ImageClassifier of configs/incubate_vit_b.py; only its
# `backbone.*` weights are loaded (pos_embed resized from 224/16 to the input size by mmpretrain's ViT).
# Point at another one with the environment variable INCUBATED_CHECKPOINT (read when the config is
# loaded; `--cfg-options checkpoint=...` would NOT reach the nested init_cfg):
#   INCUBATED_CHECKPOINT=path/to/vit-b.pth python tools/train.py configs/downstream/<config>
# (equivalently: --cfg-options model.backbone.init_cfg.checkpoint=path/to/vit-b.pth).
checkpoint = '{{$INCUBATED_CHECKPOINT:work_dirs/incubate_vit_b/finetune/finetuned.pth}}'
vit_b_backbone = dict(
    type='mmpretrain.VisionTransformer',
    arch='base',
    patch_size=16,
    qkv_bias=True,
    norm_cfg=dict(type='LN', eps=1e-6),
    drop_rate=0.,
    drop_path_rate=0.1,
    out_type='featmap',
    with_cls_token=True,  # the checkpoint has one; featmap outputs drop it
    final_norm=True,
    interpolate_mode='bicubic',
    init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.'))
