# The accuracy-at-equal-cost benchmark's deep, narrow ViT under decentralized modular training (DMT):
# module k is incubated only on the k-th of K disjoint, class-balanced quarters of the training set;
# meta pretraining and fine-tuning use all of it (as configs/incubate_demo_fashion_mnist_dmt.py).
# A quarter of the 15k images is 30 iterations per epoch; the base warms up over 10.
_base_ = './incubate_deep-vit-16x32-p7_fashion-mnist.py'

incubation = dict(dmt=dict(seed=0))
