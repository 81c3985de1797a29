# As upernet_vit-l-incubated_mln_8xb2-160k_ade20k-512x512.py (checkpoint: INCUBATED_CHECKPOINT), 80k iterations.
_base_ = './upernet_vit-l-incubated_mln_8xb2-160k_ade20k-512x512.py'

max_iters = 80000
train_cfg = dict(max_iters=max_iters, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
