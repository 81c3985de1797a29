# Deep Incubation of Swin-B on ImageNet-1K, the whole pipeline from one config, with the phases and recipe of
# configs/incubate_vit_b.py (_base_/schedules/incubation_in1k.py); E2E: configs/e2e_swin_b.py.
#
# Module split (ours: the official code has no Swin): Swin-B's 24 blocks, stages (2, 2, 18, 2), in K=4
# modules of 6 consecutive blocks: module 0 = stages 0 and 1 and the first 2 blocks of stage 2, modules 1
# and 2 = 6 blocks of stage 2 each, module 3 = the last 4 of stage 2 and stage 3. Equal block counts are
# equal work: Swin halves the resolution and doubles the width at each patch merging, so a block costs
# about the same FLOPs in every stage (attention is windowed), and each module's hybrid is equally
# expensive. Each patch merging goes with its stage's last block (modules 0, 0 and 3). The meta model
# keeps the four stages with one block per (module, stage): stages (1, 1, 4, 1); a hybrid expands only
# its module's blocks, each keeping the window shift of its place in the full model.
#   python tools/train.py configs/incubate_swin_b.py --phase incubate --module 2  # one module, one job
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/base_224.py',
    './_base_/datasets/imagenet_bs64_deit-ra_224.py',
    './_base_/schedules/incubation_in1k.py',
]
