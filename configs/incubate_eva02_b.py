# Deep Incubation of EVA-02-B/14 on ImageNet-1K, the whole pipeline from one config: the phases of
# configs/incubate_vit_b.py (_base_/schedules/incubation_in1k.py) with mmpretrain's EVA-02-B model
# (_base_/models/eva02-base-p14_in1k.py); E2E: configs/e2e_eva02_b.py.
#
# Recipe: the official Deep Incubation ViT recipe (DeiT: AdamW, lr 2e-3 for 2048 images per step, timm's
# cosine with a 20-epoch warm-up, RandAugment, Mixup/CutMix, repeated augmentation, 224 px). mmpretrain has no
# ImageNet-1K training recipe for EVA-02: its eva02/*_in1k.py configs evaluate the converted checkpoints (their
# schedule, imagenet_bs2048_AdamW.py, is a generic ViT one, and their data is 448 px), and EVA-02's own recipe
# pretrains by masked image modelling against EVA-CLIP features before fine-tuning, which is not training from
# scratch. An EVA-02-B is a ViT-B (width 768, 12 blocks, 86.5M parameters at 224 px) with rotary position
# embeddings and a SwiGLU FFN, so it takes the recipe the official runs use for ViT-B, drop path 0.1.
#
# Module split: as ViT-B, K=4 modules of 3 blocks (EVA-02 blocks all cost the same); the stem (patch
# embedding, class token, position embedding and the RoPE tables) goes with module 0, the pooled feature's
# norm ln2 and the head with module 3. Meta model 4 x 1 block. Patch 14 at 224 px gives 256 tokens
# (ViT-B/16: 196): each phase costs about 1.3x its ViT-B counterpart.
#   python tools/train.py configs/incubate_eva02_b.py                              # the whole pipeline
#   python tools/train.py configs/incubate_eva02_b.py --phase incubate --module 2  # one module, one job
# Data: IMAGENET_ROOT=/path/to/imagenet.
_base_ = [
    './_base_/models/eva02-base-p14_in1k.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/incubation_in1k.py',
]
