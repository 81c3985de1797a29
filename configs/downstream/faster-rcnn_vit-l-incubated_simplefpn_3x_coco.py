# As faster-rcnn_vit-l-incubated_simplefpn_1x_coco.py (checkpoint: INCUBATED_CHECKPOINT), 36 epochs.
_base_ = ['./faster-rcnn_vit-l-incubated_simplefpn_1x_coco.py', './_base_/schedule_coco_3x.py']

max_epochs = _base_.schedule_3x.max_epochs
train_cfg = _base_.schedule_3x.train_cfg
param_scheduler = _base_.schedule_3x.param_scheduler
