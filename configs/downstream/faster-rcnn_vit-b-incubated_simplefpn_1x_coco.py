# Faster R-CNN (boxes only: most detection data sets have no masks) with the incubated ViT-B/16: the Mask R-CNN
# config without its mask branch, mask loading and segm metric. Settings as there (checkpoint, image_size,
# classes, data_root; see _base_/vit-b_incubated_backbone.py).
_base_ = './mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py'

with_mask = False
coco_metric = ['bbox']
model = dict(roi_head=dict(mask_roi_extractor=None, mask_head=None))
