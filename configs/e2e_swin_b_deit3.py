# End-to-end Swin-B with the DeiT-III recipe of configs/e2e_vit_b_deit3.py (the supplement trains Swin-B
# with it: 83.8 top-1 incubated), mmpretrain's Swin-B model (drop path 0.5, as Swin's own recipe).
_base_ = './e2e_vit_b_deit3.py'

model = dict(
    _delete_=True,
    type='ImageClassifier',
    backbone=dict(type='SwinTransformer', arch='base', img_size=224, drop_path_rate=0.5),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1024, init_cfg=None,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'), cal_acc=False),
    init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
              dict(type='Constant', layer='LayerNorm', val=1., bias=0.)],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
