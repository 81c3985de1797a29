# DeiT-T-32 trained end to end on CIFAR-100 at the cost of its incubation pipeline: the baseline of
# configs/cifar100/incubate_deit_t_32.py and the base it inherits. A plain mmpretrain config: the recipe
# and the pipeline's schedule of e2e_deit_t_128.py (see there) with 32 blocks instead of 128.
#
# DeiT-T-32 is DeiT-Tiny's width (192, 3 heads, MLP 768) with 32 blocks, 4x4 patches on the 32x32
# images. Paper, Table 2: 14.5M parameters, 1.0 GFLOPs, top-1 72.8 end to end and 75.3 with
# incubation; this model: 14.28M parameters (14.45M with the 1000-class head the paper's counts fit),
# 0.98 GFLOPs (MMEngine's count, multiply-adds; tests/test_configs.py).
# E2E epochs: the pipeline's block-epochs (4 x 300 meta + 4 x (3 + 8) x 50 incubation + 32 x 50
# fine-tune = 5000) over 32 blocks, rounded up: 157 (97 for 25+25, 275 for 100+100).
_base_ = './e2e_deit_t_128.py'

depth = 32
# as e2e_deit_t_128.py counts it, with K, meta, incubate and fine-tune epochs from there
incubation_cost = (_base_.num_modules * _base_.meta_epochs
                   + _base_.num_modules * (_base_.num_modules - 1 + depth // _base_.num_modules)
                   * _base_.incubate_epochs
                   + depth * _base_.finetune_epochs)  # 5000 block-epochs
e2e_epochs = -(-incubation_cost // depth)  # 157

model = dict(backbone=dict(arch=dict(num_layers=depth)))
train_cfg = dict(max_epochs=e2e_epochs)
