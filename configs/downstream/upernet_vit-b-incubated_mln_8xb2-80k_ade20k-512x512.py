# As upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py (see there for the checkpoint:
# INCUBATED_CHECKPOINT) on the 80k-iteration schedule (the paper's), with the same warm-up and poly decay:
# the schedule of _base_/schedule_ade20k_80k.py.
_base_ = ['./upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py', './_base_/schedule_ade20k_80k.py']

train_cfg = _base_.schedule_80k.train_cfg
default_hooks = _base_.schedule_80k.default_hooks
param_scheduler = _base_.schedule_80k.param_scheduler
