# UperNet on ADE20K with the incubated EVA-02-B/14 (configs/incubate_eva02_b.py): mmseg has no EVA-02 config, so
# this is the recipe of the ViT-B one (upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py: see there for
# the settings, checkpoint via INCUBATED_CHECKPOINT or `checkpoint`) with mmpretrain's ViTEVA02 as the backbone:
# feature maps of blocks 4, 6, 8 and 12 (out_indices 3, 5, 7, 11, class token dropped), mmseg's MultiLevelNeck
# making the pyramid (scales 4, 2, 1, 0.5), UPerHead + FCN auxiliary head, AdamW lr 1e-4, layer-wise LR decay
# 0.65, drop path 0.1; batches padded to 532 px (38 patches of 14 px) and the whole-image test to multiples of
# 28 px, as the ViT-H/14 config (why there).
# The backbone is built as the classifier was (img_size 224: the checkpoint's 16x16 position table and RoPE
# tables load as they are) and adapts to any input itself: ViTEVA02 interpolates the position table to the
# input's token grid in every forward pass (bicubic) and recomputes its RoPE tables when the grid changes.
# Every backbone tensor of the classifier is used but `ln2`, the norm of its mean-pooled feature, which a
# feature-map backbone (out_type='featmap') does not pool (nor has: final_norm=False, as the classifier).
# mmpretrain keeps the RoPE tables as (persistent) buffers, so a trained segmentor's checkpoint holds those of
# its last input grid; loading it into a freshly built model logs their size mismatch, harmlessly (they are
# recomputed on the first forward pass).
_base_ = './upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

checkpoint = '{{$INCUBATED_CHECKPOINT:{{fileDirname}}/../../work_dirs/incubate_eva02_b/finetune/finetuned.pth}}'
pad_size = 532  # the 512 crops padded to 38 patches of 14 px (another image_size: the next multiple of 28)
model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=28)),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ViTEVA02',
        arch='b',
        img_size=224,
        patch_size=14,
        sub_ln=True,
        final_norm=False,
        out_type='featmap',
        with_cls_token=True,  # the checkpoint has one; featmap outputs drop it
        interpolate_mode='bicubic',
        drop_path_rate=0.1,
        out_indices=(3, 5, 7, 11),
        init_cfg=dict(type='Pretrained', checkpoint='${checkpoint}', prefix='backbone.')))
