# The demo pipeline (`make demo`): Deep Incubation of an 8-block ViT (width 64, patch 4) on
# Fashion-MNIST, K=4 modules of 2 blocks, next to end-to-end training of the same model at equal
# cost. Sized for a 2-core CPU (about 10 minutes): 12k training images, 2k validation images during
# training, the full 10k test set at the end.
_base_ = [
    './_base_/models/vit-tiny-p4_fashion-mnist.py',
    './_base_/datasets/fashion-mnist_bs128.py',
    './_base_/schedules/adamw_cosine_demo.py',
    './_base_/default_runtime.py',
    './_base_/incubation_runner.py',  # a pipeline for stock tools too
]

train_dataloader = dict(dataset=dict(indices=12000))
val_dataloader = dict(dataset=dict(indices=2000))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
randomness = dict(seed=0)

# Epochs per phase. Cost is counted in block-epochs (blocks in the trained network x epochs): meta
# 4 blocks, each hybrid 3 meta + 2 real blocks, fine-tune and E2E the full 8 blocks. E2E gets the
# total incubation cost, rounded up.
num_modules = 4
depth = 8
meta_epochs = 3
incubate_epochs = 2
finetune_epochs = 2
incubation_cost = (num_modules * meta_epochs
                   + num_modules * (num_modules - 1 + depth // num_modules) * incubate_epochs
                   + depth * finetune_epochs)
e2e_epochs = -(-incubation_cost // depth)

incubation = dict(
    num_modules=num_modules,
    # Modules grown from the meta model (ours, beyond the paper's scratch modules): they beat scratch modules
    # at every depth and budget of benchmarks/where_incubation_wins.py (docs/benchmarks.md).
    module_init='meta',
    meta=dict(train_cfg=dict(max_epochs=meta_epochs)),
    incubate=dict(train_cfg=dict(max_epochs=incubate_epochs), model=dict(backbone=dict(drop_path_rate=0.1))),
    finetune=dict(  # as the official fine-tuning: no warm-up, no gradient clipping
        train_cfg=dict(max_epochs=finetune_epochs),
        model=dict(backbone=dict(drop_path_rate=0.1)),
        param_scheduler=_base_.no_warmup_param_scheduler),
    e2e=dict(train_cfg=dict(max_epochs=e2e_epochs), model=dict(backbone=dict(drop_path_rate=0.1))),
    # The growth peers (run when `methods` names them, e.g. --cfg-options "incubation.methods=[incubation,stack,grow]"):
    # E2E's recipe from the grown meta model, for what is left of incubation's cost after the meta model.
    stack=dict(train_cfg=dict(max_epochs=-(-(incubation_cost - num_modules * meta_epochs) // depth))),
    grow=dict(train_cfg=dict(max_epochs=-(-(incubation_cost - num_modules * meta_epochs) // depth))),
)
