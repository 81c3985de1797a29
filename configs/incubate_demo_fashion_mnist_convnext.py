# The CPU demo with mmpretrain's ConvNeXt: a 2x2 patchify stem (14x14 maps), three stages of 2, 4 and 2
# blocks at widths 32, 64 and 128, each stage after the first preceded by its downsampling layer
# (LayerNorm + 2x2 stride-2 convolution: 14 -> 7 -> 3), layer scale 1e-6 as ConvNeXt's own. K=2 modules of 4
# blocks, both crossing a stage boundary: module 0 holds the stem, stage 0, the downsampling before stage 1
# and stage 1's first 2 blocks; module 1 stage 1's last 2 blocks, the downsampling before stage 2 (it
# changes the width to stage 2's) and stage 2 with the final norm and head. The meta model keeps the three
# stages at their widths with one block per (module, stage): stages of 1, 2 and 1 blocks.
# Same data and schedule as configs/incubate_demo_fashion_mnist.py; the products are plain mmpretrain
# ConvNeXt classifiers.
#   python tools/train.py configs/incubate_demo_fashion_mnist_convnext.py --phase all
_base_ = './incubate_demo_fashion_mnist.py'

model = dict(
    _delete_=True,
    type='ImageClassifier',
    backbone=dict(
        type='ConvNeXt',
        arch=dict(depths=[2, 4, 2], channels=[32, 64, 128]),
        in_channels=1,
        stem_patch_size=2,
        out_indices=(2, ),  # mmpretrain's ConvNeXt counts a negative index from 4 stages
        drop_path_rate=0.,
        gap_before_final_norm=True),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None),
)

depth = 8
module_depths = (4, 4)
meta_blocks = 4  # stages (1, 2, 1)
hybrid_blocks = (4 + 2, 1 + 1 + 4)  # module k's blocks plus one per segment of the other module
incubation_cost = (meta_blocks * _base_.meta_epochs + sum(hybrid_blocks) * _base_.incubate_epochs
                   + depth * _base_.finetune_epochs)
e2e_epochs = -(-incubation_cost // depth)

incubation = dict(
    num_modules=len(module_depths),
    module_depths=module_depths,
    e2e=dict(train_cfg=dict(max_epochs=e2e_epochs)))
