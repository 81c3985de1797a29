# Deep Incubation of ConvNeXt-B on ImageNet-1K, the whole pipeline from one config: mmpretrain's ConvNeXt-B
# and its recipe (configs/e2e_convnext_b.py, the E2E phase) in the official phase structure
# (_base_/schedules/incubation_convnext_in1k.py: meta 300 epochs, modules 100 each, fine-tune 100).
#
# Module split (ours: the official code has no ConvNeXt): ConvNeXt-B's 36 blocks, stages (3, 3, 27, 3) at
# widths 128, 256, 512, 1024, in K=4 modules of 9 consecutive blocks: module 0 = stages 0 and 1 and the first
# 3 blocks of stage 2, modules 1 and 2 = 9 blocks of stage 2 each, module 3 = the last 6 of stage 2 and stage
# 3. Equal block counts are equal work: each downsampling halves the resolution and doubles the width, so a
# block's pointwise convolutions (8 C^2 multiply-adds per position, 95 % of it) cost the same in every stage
# and only its 7x7 depthwise one (49 C per position) halves from stage to stage: 433, 422, 417 and 414 MFLOPs
# per block in stages 0-3 at 224 px (MMEngine's count). Parameters do not follow: a block of stage s has 4^s times
# stage 0's, so the modules hold 9.1M, 19.1M, 19.1M and 41.2M parameters (module 3 with the head), and
# activations do the opposite (a stage-0 block holds 8 times a stage-2 block's), so module 0's hybrid needs
# the most memory per block. Each downsampling layer goes with the module holding its stage's first block
# (modules 0, 0 and 3), the stem with module 0, the final norm and head with module 3. The meta model keeps
# the four stages at their widths with one block per (module, stage): stages (1, 1, 4, 1), 7 blocks; the
# hybrids have 13, 15, 15 and 14 blocks (stages (3, 3, 6, 1), (1, 1, 12, 1) twice, (1, 1, 9, 3)).
#   python tools/train.py configs/incubate_convnext_b.py                              # the whole pipeline
#   python tools/train.py configs/incubate_convnext_b.py --phase incubate --module 2  # one module, one job
_base_ = ['./e2e_convnext_b.py', './_base_/schedules/incubation_convnext_in1k.py']
