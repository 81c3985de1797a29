# Faster R-CNN (boxes only) version of the downstream demo: mask-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-
# fashion-mnist.py without its mask branch, mask loading and segm metric; the same settings (checkpoint,
# image_size, classes, data_root, in_channels, ...). The base config for detection data sets without masks
# (see docs/user_guides/own_data.md).
_base_ = './mask-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-fashion-mnist.py'

with_mask = False
coco_metric = ['bbox']
model = dict(roi_head=dict(mask_roi_extractor=None, mask_head=None))
