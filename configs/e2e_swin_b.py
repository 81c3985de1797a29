# End-to-end baseline: Swin-B (mmpretrain's model: drop path 0.5, Mixup/CutMix, label smoothing) trained
# from scratch on ImageNet-1K with the DeiT recipe of the official Deep Incubation ViT runs (AdamW, lr 2e-3
# for 2048 images per step, timm's cosine with a 20-epoch warm-up, 300 epochs), as configs/e2e_vit_b.py.
# Swin's own recipe differs in batch (1024, lr 1e-3) and clips gradients at 5; the DeiT-III recipe:
# configs/e2e_swin_b_deit3.py.
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/base_224.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/deit_adamw_bs2048.py',
]
