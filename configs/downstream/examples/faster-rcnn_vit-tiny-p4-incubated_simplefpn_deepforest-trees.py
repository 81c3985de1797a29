# Your own data, worked example (docs/user_guides/own_data.md): the demo's incubated
# ViT (`make demo`) as the backbone of a Faster R-CNN on RGB aerial photos of tree crowns, boxes only, one class
# (tools/dataset_converters/deepforest_to_coco.py data/deepforest_trees). Everything else is the CPU demo's.
_base_ = '../demo/faster-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-fashion-mnist.py'

data_root = 'data/deepforest_trees/'  # annotations/instances_{train,val}.json, images/{training,validation}/
classes = ('Tree', )                  # the heads' num_classes follows
image_size = 128                      # 400 px photos resized to fit 128 px: 32x32 tokens of the patch-4 ViT
in_channels = 3                       # RGB: the grey patch embedding is inflated (averaged over the channels)
color_type = 'color'
mean = [72.94] * 3                    # the backbone's grey statistics on each channel
std = [90.02] * 3
max_iters = 300                       # training iterations of 8 images (schedule, validation and checkpoint follow)
