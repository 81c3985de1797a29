# The 80k-iteration ADE20K schedule (the paper's) of the UperNet configs, whose own is mmseg's 160k: the
# same warm-up (1500 iterations from 1e-6) and poly decay to the end, evaluation and a checkpoint every
# 8000 iterations. The section of a base cannot replace what another base of the same config sets, so
# an 80k config lists this file next to its 160k config and takes the settings over:
#   train_cfg = _base_.schedule_80k.train_cfg
#   default_hooks = _base_.schedule_80k.default_hooks
#   param_scheduler = _base_.schedule_80k.param_scheduler
max_iters = 80000
schedule_80k = dict(
    train_cfg=dict(max_iters=max_iters, val_interval=8000),
    default_hooks=dict(checkpoint=dict(interval=8000)),
    param_scheduler=[
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
        dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
    ])
