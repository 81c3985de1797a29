# Accuracy-at-equal-cost benchmark (benchmarks/accuracy_at_equal_cost.py): a deep, narrow ViT — 16
# blocks of width 32 (2 heads, MLP 128), patch 7 (4x4 tokens) — on Fashion-MNIST, K=4 modules of 4
# blocks. Same recipe as the demo (configs/incubate_demo_fashion_mnist.py: AdamW 1e-3, cosine, label
# smoothing, drop path 0.1 outside meta pretraining); the benchmark script sets seed, training-set size
# and the epochs of every phase from one budget, so that E2E gets the cost of the whole incubation
# pipeline, meta pretraining included.
#
# Sized for a 2-core CPU: the training set is the first 15k Fashion-MNIST training images (the
# benchmark's 10% is 1.5k images, 12 iterations per epoch), hence a 10-iteration warm-up.
_base_ = '../incubate_demo_fashion_mnist.py'

depth = 16
embed_dims = 32
model = dict(
    backbone=dict(arch=dict(embed_dims=embed_dims, num_layers=depth, num_heads=2,
                            feedforward_channels=4 * embed_dims),
                  patch_size=7),
    head=dict(in_channels=embed_dims))

train_dataloader = dict(dataset=dict(indices=15000))

warmup_iters = 10
param_scheduler = [dict(_base_.param_scheduler[0], warmup=warmup_iters)]
