# The CPU demo with mmpretrain's EVA-02 backbone (ViTEVA02: rotary position embeddings, SwiGLU FFN with
# sub-LN): patch 4 (7x7 tokens), width 64, 8 blocks, K=4 modules of 2, as the ViT demo. Same data and
# schedule as configs/incubate_demo_fashion_mnist.py; the products are plain mmpretrain ViTEVA02 classifiers.
#   python tools/train.py configs/incubate_demo_fashion_mnist_eva02.py --phase all
_base_ = './incubate_demo_fashion_mnist.py'

model = dict(
    _delete_=True,
    type='ImageClassifier',
    backbone=dict(
        type='ViTEVA02',
        # feedforward_channels: a SwiGLU of 2/3 x 4 the width, as ViTEVA02's own archs
        arch=dict(embed_dims=64, num_layers=8, num_heads=2, feedforward_channels=170),
        img_size=28,
        patch_size=4,
        in_channels=1,
        sub_ln=True,
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
