# As upernet_vit-h-incubated_mln_8xb2-160k_ade20k-512x512.py (checkpoint: INCUBATED_CHECKPOINT), 80k iterations.
_base_ = ['./upernet_vit-h-incubated_mln_8xb2-160k_ade20k-512x512.py', './_base_/schedule_ade20k_80k.py']

train_cfg = _base_.schedule_80k.train_cfg
default_hooks = _base_.schedule_80k.default_hooks
param_scheduler = _base_.schedule_80k.param_scheduler
