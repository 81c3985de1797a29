# The phases of Deep Incubation with the DeiT-III recipe (configs/e2e_*_deit3.py is the E2E phase): the
# official ViT phase structure (schedules/incubation_in1k.py: meta model with drop path 0, modules with
# 0.1, fine-tuning without warm-up) with the recipe's optimizer and data; the supplement gives no phase
# lengths for it, so the meta model trains as long as the E2E model (400 epochs), each module and the
# fine-tuning 100 epochs each. Batch per GPU x GPUs x accumulation stays 2048 per step in every phase.
_base_ = '../incubation_runner.py'  # a pipeline for stock tools too

deit3_meta_epochs = 400
deit3_incubate_epochs = 100
deit3_finetune_epochs = 100
# the recipe's schedule (configs/e2e_vit_b_deit3.py) over a phase: 5-epoch warm-up, cosine to the phase's end
deit3_warmup = dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True)
deit3_cosine = dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)

incubation = dict(
    num_modules=4,
    meta=dict(
        model=dict(backbone=dict(drop_path_rate=0.)),
        train_cfg=dict(max_epochs=deit3_meta_epochs),
        param_scheduler=[deit3_warmup, dict(deit3_cosine, end=deit3_meta_epochs)]),
    incubate=dict(
        model=dict(backbone=dict(drop_path_rate=0.1)),
        train_cfg=dict(max_epochs=deit3_incubate_epochs),
        param_scheduler=[deit3_warmup, dict(deit3_cosine, end=deit3_incubate_epochs)]),
    finetune=dict(
        train_cfg=dict(max_epochs=deit3_finetune_epochs),
        param_scheduler=[dict(deit3_cosine, begin=0, end=deit3_finetune_epochs)]),  # no warm-up
    e2e=dict(),
)
