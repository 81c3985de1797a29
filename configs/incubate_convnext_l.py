# Deep Incubation of ConvNeXt-L on ImageNet-1K: mmpretrain's ConvNeXt-L and its recipe (configs/e2e_convnext_l.py,
# the E2E phase) in the phases of _base_/schedules/incubation_convnext_in1k.py. ConvNeXt-L has ConvNeXt-B's
# stages (3, 3, 27, 3) at widths 192, 384, 768, 1536, so it takes the module split of configs/incubate_convnext_b.py
# (why there): K=4 modules of 9 blocks (20.3M, 42.9M, 42.9M and 91.7M parameters), meta model stages (1, 1, 4, 1).
#   python tools/train.py configs/incubate_convnext_l.py --phase incubate --module 2  # one module, one job
_base_ = ['./e2e_convnext_l.py', './_base_/schedules/incubation_convnext_in1k.py']
