# The 3x COCO schedule of the Mask R-CNN configs (whose own is mmdet's 1x, 12 epochs): 36 epochs, the
# same 500-iteration linear warm-up, lr steps at epochs 27 and 33. The section of a base cannot
# replace what another base of the same config sets, so a 3x config lists this file next to its 1x
# config and takes the settings over:
#   max_epochs = _base_.schedule_3x.max_epochs
#   train_cfg = _base_.schedule_3x.train_cfg
#   param_scheduler = _base_.schedule_3x.param_scheduler
__max_epochs = 36  # (names starting with __ stay out of the config)
schedule_3x = dict(
    max_epochs=__max_epochs,
    train_cfg=dict(max_epochs=__max_epochs),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='MultiStepLR', begin=0, end=__max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
    ])
