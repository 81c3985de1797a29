# AdamW with timm's cosine schedule as the official runs use it (mmincubation.TimmCosineLR: the cosine
# spans the whole phase, a linear warm-up from 1e-6 inside it, down to 1e-5), but stepped every iteration:
# the demo's phases last 2-3 epochs, so per-epoch steps would hold lr for a third of a phase and the
# shortest warm-up would be a whole epoch. Phases of the pipeline override max_epochs.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'.pos_embed': dict(decay_mult=0.0), '.cls_token': dict(decay_mult=0.0)}),
)
warmup_iters = 50
param_scheduler = [
    # `end` (the cosine's length) is left to the runner: the phase's max_iters
    dict(type='mmincubation.TimmCosineLR', warmup=warmup_iters, warmup_lr=1e-6, eta_min=1e-5, by_epoch=False),
]
no_warmup_param_scheduler = [dict(param_scheduler[0], warmup=0)]  # for fine-tuning
train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# lr 1e-3 is for 128 images per step and follows the actual batch (GPUs x batch per GPU), as the official
# code's lr does; --cfg-options auto_scale_lr.enable=False keeps it fixed.
auto_scale_lr = dict(enable=True, base_batch_size=128)
