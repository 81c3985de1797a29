# As mask-rcnn_vit-h-incubated_simplefpn_1x_coco.py (checkpoint: INCUBATED_CHECKPOINT), 36 epochs.
_base_ = './mask-rcnn_vit-h-incubated_simplefpn_1x_coco.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
