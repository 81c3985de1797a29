# The phases of Deep Incubation with mmpretrain's ConvNeXt recipe (configs/e2e_convnext_{b,l}.py is the E2E
# phase): the official phase structure of schedules/incubation_in1k.py with the recipe's optimizer, schedule,
# data, batch and EMA in every phase; only this `incubation` section differs per phase:
#   phase     network                               epochs  drop path    warm-up
#   meta      K=4 modules of 1 block per stage       300    0            20 epochs, as the recipe
#   incubate  meta model with module k real          100    0.1          20 epochs
#   finetune  the assembled model                    100    the model's  none: cosine from the first epoch
#   e2e       the same full model, from scratch      300    the model's  20 epochs (the baseline)
# Each phase keeps the recipe's 4096 images per step (lr 4e-3; --auto-scale-lr for other batches) and its EMA hook:
# a phase's product is its averaged weights (the pipeline exports EMA weights when a phase has the hook, and
# tags them so). The recipe's cosine has no `end`: MMEngine ends it at each phase's max_epochs.
_base_ = '../incubation_runner.py'  # a pipeline for stock tools too

convnext_meta_epochs = 300
convnext_incubate_epochs = 100
convnext_finetune_epochs = 100
# mmpretrain's _base_/schedules/imagenet_bs1024_adamw_swin.py cosine, from the first epoch
convnext_no_warmup = [dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0)]

incubation = dict(
    num_modules=4,
    meta=dict(
        model=dict(backbone=dict(drop_path_rate=0.)),
        train_cfg=dict(max_epochs=convnext_meta_epochs)),
    incubate=dict(
        model=dict(backbone=dict(drop_path_rate=0.1)),
        train_cfg=dict(max_epochs=convnext_incubate_epochs)),
    finetune=dict(
        train_cfg=dict(max_epochs=convnext_finetune_epochs),
        param_scheduler=convnext_no_warmup),
    e2e=dict(),
)
