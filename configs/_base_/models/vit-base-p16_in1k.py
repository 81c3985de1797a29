# ViT-B/16 at 224x224 for ImageNet-1K, built as timm's `vit_base_patch16_224` (qkv bias, LayerNorm
# eps 1e-6) so official checkpoints map onto it, with the DeiT recipe's Mixup/CutMix and label
# smoothing. `drop_path_rate` is the full model's (fine-tune and E2E); the incubation section of a
# pipeline config sets the meta and incubation phases' own rates.
# The backbone is mmpretrain's VisionTransformer initialised as timm's (every Linear weight, the class
# token and the position embedding truncated-normal std 0.02, Linear biases zero; mmpretrain alone gives
# the FFN weights Xavier-uniform): same keys, so its checkpoints load into stock
# `type='VisionTransformer'` configs of mmpretrain, mmdet and mmseg.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmincubation.TimmInitVisionTransformer',
        arch='base',
        img_size=224,
        patch_size=16,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        drop_rate=0.,
        drop_path_rate=0.1,
        out_type='cls_token',
        final_norm=True),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=1000,
        in_channels=768,
        hidden_dim=None,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # the official code initialises the classifier like every Linear (mmpretrain's default is zeros)
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
