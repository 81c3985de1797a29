# The CPU demo with a Swin Transformer: patch 2 (14x14 tokens), windows of 7, three stages of 2, 4 and
# 2 blocks at widths 32, 64 and 128 (patch merging between them); small maps are padded to the window
# (pad_small_map) so every stage attends in shifted windows. K=2 modules of 4 blocks, both crossing a
# stage boundary: module 0 holds stage 0, the patch merging after it and the first 2 blocks of stage 1;
# module 1 the last 2 blocks of stage 1, the merging after it and stage 2. The meta model keeps the
# three stages with one block per (module, stage): stages of 1, 2 and 1 blocks; its second block of
# stage 1 stands for the full model's third, so it does not shift its windows (Swin shifts in every
# other block of a stage: each block keeps the shift of the full model's block it stands for).
# Same data and schedule as configs/incubate_demo_fashion_mnist.py; the products are plain mmpretrain
# SwinTransformer classifiers.
#   python tools/train.py configs/incubate_demo_fashion_mnist_swin.py --phase all
_base_ = './incubate_demo_fashion_mnist.py'

model = dict(
    _delete_=True,
    type='ImageClassifier',
    backbone=dict(
        type='SwinTransformer',
        arch=dict(embed_dims=32, depths=[2, 4, 2], num_heads=[2, 4, 8]),
        img_size=28,
        patch_size=2,
        in_channels=1,
        window_size=7,
        pad_small_map=True,
        out_indices=(2, ),
        drop_path_rate=0.),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
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
