# Faster R-CNN (boxes only) with the incubated ViT-H: mask-rcnn_vit-h-incubated_simplefpn_1x_coco.py without its
# mask branch, mask loading and segm metric (as faster-rcnn_vit-b-incubated_simplefpn_1x_coco.py).
_base_ = './mask-rcnn_vit-h-incubated_simplefpn_1x_coco.py'

with_mask = False
coco_metric = ['bbox']
model = dict(roi_head=dict(mask_roi_extractor=None, mask_head=None))
