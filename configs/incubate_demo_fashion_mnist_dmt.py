# Decentralized modular training (DMT, the paper's supplementary) on the CPU demo: module k is
# incubated only on the k-th of K disjoint, class-balanced parts of the training set, as if each
# module belonged to a party holding its own data. Meta pretraining and fine-tuning use all data.
#
# `incubation.dmt` wraps the incubate phase's training set in mmincubation.ClassBalancedSplitDataset
# with split = the module index (mmincubation/engine/runner/phase_config.py), so one config serves
# all K modules:
#   python tools/train.py configs/incubate_demo_fashion_mnist_dmt.py --phase incubate --module 2
_base_ = './incubate_demo_fashion_mnist.py'

# A module's quarter of the data is 24 iterations per epoch: warm up over 10 of them, not 50.
dmt_warmup_iters = 10

incubation = dict(
    dmt=dict(seed=0),
    incubate=dict(param_scheduler=[dict(_base_.param_scheduler[0], warmup=dmt_warmup_iters)]))
