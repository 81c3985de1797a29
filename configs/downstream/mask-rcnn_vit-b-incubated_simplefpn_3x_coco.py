# As mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py (see there for the checkpoint: INCUBATED_CHECKPOINT),
# trained for 36 epochs (LR steps at 27 and 33): the schedule of _base_/schedule_coco_3x.py.
_base_ = ['./mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py', './_base_/schedule_coco_3x.py']

max_epochs = _base_.schedule_3x.max_epochs
train_cfg = _base_.schedule_3x.train_cfg
param_scheduler = _base_.schedule_3x.param_scheduler
