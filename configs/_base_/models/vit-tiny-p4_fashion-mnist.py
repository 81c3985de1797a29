# A small ViT for 28x28 grayscale images: patch 4 (7x7 tokens), width 64, 8 blocks, initialised as
# timm's ViT (mmincubation.TimmInitVisionTransformer: every Linear weight, the class token and the
# position embedding truncated-normal std 0.02, Linear biases zero), as the ImageNet models.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmincubation.TimmInitVisionTransformer',
        arch=dict(embed_dims=64, num_layers=8, num_heads=2, feedforward_channels=256),
        img_size=28,
        patch_size=4,
        in_channels=1,
        drop_rate=0.,
        drop_path_rate=0.,
        out_type='cls_token'),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
)
