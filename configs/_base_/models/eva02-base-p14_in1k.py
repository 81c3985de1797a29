# EVA-02-B/14 (mmpretrain's ViTEVA02, arch 'b': width 768, 12 blocks, 12 heads, rotary position embeddings,
# SwiGLU FFN of 2048 with sub-LN) built as mmpretrain's eva02/eva02-base-p14_in1k.py builds it: mean-pooled
# patch tokens normalised by `ln2` (no final norm on the tokens), a linear head, its init (every Linear
# truncated-normal std 0.02, LayerNorms 1 / 0), Mixup 0.8 / CutMix 1.0 and label smoothing 0.1. Two settings
# differ, because mmpretrain's file exists only to evaluate EVA-02's converted checkpoints (MIM-pretrained on
# ImageNet-21K, fine-tuned at 448 px); it is no recipe for training from scratch (see configs/incubate_eva02_b.py):
#   img_size 224 (16x16 patches of 14 px; 448 there), the input of the DeiT recipe we train with;
#   drop_path_rate 0.1 (0 there: an evaluation config), the full model's rate of the official ViT-B runs.
# These configs have no file of their own in mmpretrain 1.2.0 (no _base_/models/eva02): this one restates the
# model, and tests/test_full_size_backbones.py checks it against mmpretrain's in every other field.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ViTEVA02',
        arch='b',
        img_size=224,
        patch_size=14,
        sub_ln=True,
        final_norm=False,
        out_type='avg_featmap',
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
