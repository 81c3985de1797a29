# Deep Incubation of DeiT-Tiny (12 blocks, 4x4 patches) on CIFAR-100, the whole pipeline from one
# config: meta model (4 x 1 block) -> 4 modules of 3 blocks incubated independently -> assembly ->
# fine-tune; the "e2e" phase is configs/cifar100/e2e_deit-t-128.py, which holds the shared recipe
# (and why it was chosen). Every phase keeps its batch 512 on one GPU and lr 5e-4.
#   phase     epochs  drop path  schedule
#   meta       300    0          warmup 20 + cosine
#   incubate   100    0.1        warmup 20 + cosine
#   finetune   100    0.1        cosine, no warmup, clip grad 1.0
#   e2e        300    0.1        warmup 20 + cosine
#   python tools/train.py configs/cifar100/incubate_deit-t-128.py
_base_ = './e2e_deit-t-128.py'

num_modules = 4
meta_epochs = 300
meta_drop_path_rate = 0.
incubate_epochs = 100
incubate_drop_path_rate = 0.1
finetune_epochs = 100
finetune_max_grad_norm = 1.0

incubation = dict(
    num_modules=num_modules,
    meta=dict(
        model=dict(backbone=dict(drop_path_rate=meta_drop_path_rate)),
        train_cfg=dict(max_epochs=meta_epochs)),
    incubate=dict(
        model=dict(backbone=dict(drop_path_rate=incubate_drop_path_rate)),
        train_cfg=dict(max_epochs=incubate_epochs)),
    finetune=dict(
        optim_wrapper=dict(clip_grad=dict(max_norm=finetune_max_grad_norm)),
        param_scheduler=[dict(type='CosineAnnealingLR', eta_min=_base_.min_lr, by_epoch=True, begin=0)],
        train_cfg=dict(max_epochs=finetune_epochs)),
    e2e=dict(),
)
