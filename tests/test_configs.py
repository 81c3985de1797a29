"""The shipped recipes: ImageNet ViT-B/L/H pipelines and E2E baselines, the CIFAR-100 DeiT-T pair.

Every phase config is derived as the runner derives it (``phase_config``) and checked against the
official recipe; every model is built on the meta device (no memory, even ViT-H), the CIFAR-100 one
for real, with one forward and backward pass. Nothing reads a dataset.
"""
from __future__ import annotations

import copy
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope
from mmpretrain.registry import MODELS, TRANSFORMS

import mmincubation  # noqa: F401  (registers mmincubation.*)
from mmincubation.engine.runner.phase_config import build_layout, phase_config, resolve_arch

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
NUM_GPUS = 8
EFFECTIVE_BATCH = 2048
LR = 5e-4 * EFFECTIVE_BATCH / 512

# The official recipe, per model: blocks, width, patch, qkv bias, LayerNorm eps, the full model's
# drop path (fine-tune and E2E), and its parameter count (timm's vit_*_224 with a 1000-class head).
VIT = {
    'b': dict(depth=12, width=768, patch=16, qkv_bias=True, eps=1e-6, drop_path=0.1, params=86.6e6),
    'l': dict(depth=24, width=1024, patch=16, qkv_bias=True, eps=1e-6, drop_path=0.5, params=304.3e6),
    'h': dict(depth=32, width=1280, patch=14, qkv_bias=False, eps=1e-5, drop_path=0.6, params=631.9e6),
}
# phase: (epochs, drop path (None: the full model's), batch per GPU, gradient accumulation, warmup)
PHASES = {
    'meta': (300, 0.0, 256, 1, True),
    'incubate': (100, 0.1, 128, 2, True),
    'finetune': (100, None, 64, 4, False),
    'e2e': (300, None, 64, 4, True),
}
CIFAR_PIPELINE = CONFIGS / 'cifar100' / 'incubate_deit-t-128.py'
CIFAR_E2E = CONFIGS / 'cifar100' / 'e2e_deit-t-128.py'


@pytest.fixture(scope='module')
def load(tmp_path_factory):
    """Config.fromfile, once per file, with a temporary work dir; callers get their own copy."""
    work_dir = tmp_path_factory.mktemp('work_dirs')
    cache = {}

    def _load(path: Path) -> Config:
        if path not in cache:
            cfg = Config.fromfile(str(path))
            cfg.work_dir = str(work_dir / path.stem)
            cache[path] = cfg
        return copy.deepcopy(cache[path])

    return _load


def derived_phases(cfg: Config) -> dict:
    """The configs of meta, incubate (first and last module), finetune and e2e, as the runner makes them."""
    last = build_layout(cfg).num_modules - 1
    return {('meta', None): phase_config(cfg, 'meta'),
            ('incubate', 0): phase_config(cfg, 'incubate', 0),
            ('incubate', last): phase_config(cfg, 'incubate', last),
            ('finetune', None): phase_config(cfg, 'finetune'),
            ('e2e', None): phase_config(cfg, 'e2e')}


def with_explicit_arch(cfg: Config) -> Config:
    """``cfg`` with its backbone's named arch spelled out, as the phase configs write it."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.arch = resolve_arch(cfg.model.backbone)
    return cfg


def build_on_meta(model_cfg) -> torch.nn.Module:
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device('meta'):
        return MODELS.build(copy.deepcopy(model_cfg))


def num_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def module_param_names(names, depths: tuple, module: int) -> set:
    """Names of module ``module``'s parameters under layout ``depths``, by the paper's rule:
    its blocks, plus the stem (patch embed, tokens) for the first module and the final norm and
    head for the last one. Written independently of mmincubation.layout on purpose."""
    first = sum(depths[:module])
    blocks = range(first, first + depths[module])
    picked = set()
    for name in names:
        block = re.match(r'backbone\.layers\.(\d+)\.', name)
        if block:
            if int(block.group(1)) in blocks:
                picked.add(name)
        elif name.startswith(('backbone.patch_embed.', 'backbone.cls_token', 'backbone.pos_embed')):
            if module == 0:
                picked.add(name)
        elif name.startswith(('backbone.ln1.', 'head.')):
            if module == len(depths) - 1:
                picked.add(name)
        else:
            raise AssertionError(f'unexpected parameter {name}')
    return picked


def lr_per_epoch(cfg: Config, model: torch.nn.Module) -> list[float]:
    """The learning rate of each epoch, by building the optimizer and schedulers as the runner does."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        schedulers = []
        for scheduler in copy.deepcopy(cfg.param_scheduler):
            scheduler.setdefault('end', cfg.train_cfg.max_epochs)  # the runner's default
            assert not scheduler.get('convert_to_iter_based', False)  # stepped per epoch, as timm's
            schedulers.append(PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optim_wrapper)))
    lrs = []
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Detected call of `scheduler.step()` before')  # no training here
        for _ in range(cfg.train_cfg.max_epochs):
            lrs.append(optim_wrapper.optimizer.param_groups[0]['lr'])
            for scheduler in schedulers:
                scheduler.step()
    return lrs


def check_recipe(cfg: Config, epochs: int, drop_path: float, batch: int, accumulation: int, warmup: bool,
                 num_gpus: int = NUM_GPUS, effective_batch: int = EFFECTIVE_BATCH, lr: float = LR) -> None:
    """The DeiT recipe as every phase uses it, with the phase's own numbers."""
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.model.backbone.drop_path_rate == pytest.approx(drop_path)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.optim_wrapper.get('accumulative_counts', 1) == accumulation
    assert batch * num_gpus * accumulation == effective_batch
    # MMEngine's --auto-scale-lr ignores accumulation: the reference setup must keep lr unchanged
    assert cfg.auto_scale_lr.base_batch_size == batch * num_gpus
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert optimizer.lr == pytest.approx(lr)
    assert optimizer.weight_decay == 0.05 and optimizer.eps == 1e-8
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.norm_decay_mult == paramwise.bias_decay_mult == paramwise.flat_decay_mult == 0
    assert set(paramwise.custom_keys) == {'.cls_token', '.pos_embed'}
    schedulers = [s.type for s in cfg.param_scheduler]
    if warmup:
        assert schedulers == ['LinearLR', 'CosineAnnealingLR']
        warm, cosine = cfg.param_scheduler
        assert (warm.begin, warm.end, cosine.begin) == (0, 20, 20)
        assert lr * warm.start_factor == pytest.approx(1e-6)
    else:
        assert schedulers == ['CosineAnnealingLR'] and cfg.param_scheduler[0].begin == 0
    assert all(s.by_epoch for s in cfg.param_scheduler)
    assert cfg.param_scheduler[-1].eta_min == 1e-5
    assert not any(hook.type in ('EMAHook', 'mmpretrain.EMAHook') for hook in cfg.get('custom_hooks') or [])
    model = cfg.model
    assert [(a.type, a.alpha) for a in model.train_cfg.augments] == [('Mixup', 0.8), ('CutMix', 1.0)]
    assert model.head.loss.type == 'LabelSmoothLoss' and model.head.loss.label_smooth_val == 0.1
    assert model.head.type == 'VisionTransformerClsHead' and model.head.get('hidden_dim') is None
    assert model.backbone.type == 'VisionTransformer' and model.backbone.out_type == 'cls_token'
    transforms = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    randaug = transforms['RandAugment']
    assert (randaug.policies, randaug.num_policies, randaug.magnitude_level, randaug.magnitude_std) == \
        ('timm_increasing', 2, 9, 0.5)
    assert transforms['RandomErasing'].erase_prob == 0.25
    assert cfg.default_scope == 'mmpretrain'


@pytest.mark.parametrize('size', VIT)
def test_vit_pipeline_phases_follow_the_official_recipe(load, size):
    spec = VIT[size]
    cfg = load(CONFIGS / f'incubate_vit_{size}.py')
    assert cfg.model.type == 'ImageClassifier'
    backbone = cfg.model.backbone
    assert (backbone.patch_size, backbone.img_size, backbone.qkv_bias) == (spec['patch'], 224, spec['qkv_bias'])
    assert backbone.norm_cfg == dict(type='LN', eps=spec['eps'])
    module_depth = spec['depth'] // 4
    assert build_layout(cfg).depths == (module_depth, ) * 4
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'  # repeated augmentation, as DeiT

    for (phase, module), phase_cfg in derived_phases(cfg).items():
        epochs, drop_path, batch, accumulation, warmup = PHASES[phase]
        check_recipe(phase_cfg, epochs, spec['drop_path'] if drop_path is None else drop_path, batch,
                     accumulation, warmup)
        arch = phase_cfg.model.backbone.arch
        assert arch['embed_dims'] == spec['width']
        assert phase_cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
        clip_grad = phase_cfg.optim_wrapper.get('clip_grad')
        if phase == 'finetune':
            assert clip_grad.max_norm == 1.0
        else:
            assert clip_grad is None
        if phase == 'meta':
            assert arch['num_layers'] == 4
        elif phase == 'incubate':
            assert arch['num_layers'] == 3 + module_depth
            assert phase_cfg.model.type == 'mmincubation.IncubationClassifier'
            assert phase_cfg.model.target_module == module
            assert list(phase_cfg.model.module_depths) == [module_depth] * 4
        else:
            assert arch['num_layers'] == spec['depth'] and phase_cfg.model.type == 'ImageClassifier'


@pytest.mark.parametrize('size', VIT)
def test_vit_e2e_baseline_is_the_pipeline_e2e_phase(load, size):
    spec = VIT[size]
    e2e = load(CONFIGS / f'e2e_vit_{size}.py')
    assert 'incubation' not in e2e  # a plain config: tools/train.py runs it with an ordinary Runner
    check_recipe(e2e, 300, spec['drop_path'], 64, 4, warmup=True)
    assert e2e.model.backbone.arch == {'b': 'base', 'l': 'large', 'h': 'huge'}[size]
    pipeline_e2e = phase_config(load(CONFIGS / f'incubate_vit_{size}.py'), 'e2e')
    e2e = with_explicit_arch(e2e)
    for key in ('model', 'data_preprocessor', 'train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr',
                'default_hooks', 'default_scope'):
        assert pipeline_e2e[key] == e2e[key], key


@pytest.mark.parametrize('size', VIT)
def test_vit_models_build_with_the_right_sizes_and_trainable_modules(load, size):
    spec = VIT[size]
    cfg = load(CONFIGS / f'incubate_vit_{size}.py')
    depths = build_layout(cfg).depths
    phases = derived_phases(cfg)

    full = build_on_meta(phases['finetune', None].model)
    assert num_params(full) == pytest.approx(spec['params'], rel=1e-3)
    assert num_params(build_on_meta(load(CONFIGS / f'e2e_vit_{size}.py').model)) == num_params(full)
    assert len(full.backbone.layers) == spec['depth']
    assert full.backbone.patch_embed.projection.kernel_size == (spec['patch'], spec['patch'])
    assert full.backbone.ln1.eps == spec['eps'] and full.backbone.layers[0].ln1.eps == spec['eps']
    assert (full.backbone.layers[0].attn.qkv.bias is not None) == spec['qkv_bias']
    assert full.head.layers.head.out_features == 1000 and not hasattr(full.head.layers, 'pre_logits')
    full_names = [name for name, _ in full.named_parameters()]
    full_sizes = dict((name, p.numel()) for name, p in full.named_parameters())
    per_block = sum(n for name, n in full_sizes.items() if name.startswith('backbone.layers.0.'))

    meta = build_on_meta(phases['meta', None].model)
    assert len(meta.backbone.layers) == 4
    assert num_params(meta) == num_params(full) - (spec['depth'] - 4) * per_block

    for module in (0, len(depths) - 1):
        hybrid = build_on_meta(phases['incubate', module].model)
        assert type(hybrid).__name__ == 'IncubationClassifier'
        assert len(hybrid.backbone.layers) == 3 + depths[module]
        hybrid_depths = tuple(depths[module] if m == module else 1 for m in range(len(depths)))
        names = [name for name, _ in hybrid.named_parameters()]
        trainable = {name for name, p in hybrid.named_parameters() if p.requires_grad}
        assert trainable == module_param_names(names, hybrid_depths, module)
        # the trainable part is exactly module k of the full model
        in_full = module_param_names(full_names, depths, module)
        assert num_params(hybrid, trainable_only=True) == sum(full_sizes[name] for name in in_full)
        assert num_params(hybrid) == num_params(meta) + (depths[module] - 1) * per_block


def test_incubation_optimizer_holds_only_the_target_module_and_schedules_match_timm(load):
    cfg = load(CONFIGS / 'incubate_vit_b.py')
    phases = derived_phases(cfg)
    phases['incubate', 2] = phase_config(cfg, 'incubate', 2)

    incubate = phases['incubate', 2]
    hybrid = build_on_meta(incubate.model)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        optim_wrapper = build_optim_wrapper(hybrid, copy.deepcopy(incubate.optim_wrapper))
    in_optimizer = [p for group in optim_wrapper.optimizer.param_groups for p in group['params']]
    trainable = [p for p in hybrid.parameters() if p.requires_grad]
    assert len(in_optimizer) == len(trainable) and {id(p) for p in in_optimizer} == {id(p) for p in trainable}
    assert optim_wrapper._accumulative_counts == 2
    decay = {group['weight_decay'] for group in optim_wrapper.optimizer.param_groups for p in group['params']
             if p.ndim == 1}
    assert decay == {0.0}  # no weight decay on biases and norms

    # meta and incubate: linear warmup from 1e-6 over the first 20 epochs (MMEngine's LinearLR reaches
    # the full rate on the last of them, timm's on the next), then cosine to 1e-5
    for key, epochs in ((('meta', None), 300), (('incubate', 2), 100)):
        lrs = lr_per_epoch(phases[key], build_on_meta(phases[key].model))
        assert len(lrs) == epochs
        assert lrs[0] == pytest.approx(1e-6)
        assert lrs[10] == pytest.approx(1e-6 + (LR - 1e-6) * 10 / 19)
        assert lrs[19] == pytest.approx(LR) and lrs[20] == pytest.approx(LR)
        assert all(a > b for a, b in zip(lrs[20:], lrs[21:]))
        assert 1e-5 < lrs[-1] < 1e-5 + LR * 1e-3
    # fine-tune: no warmup, cosine from the full rate
    lrs = lr_per_epoch(phases['finetune', None], build_on_meta(phases['finetune', None].model))
    assert len(lrs) == 100 and lrs[0] == pytest.approx(LR)
    assert lrs[50] == pytest.approx(1e-5 + (LR - 1e-5) * (1 + math.cos(math.pi * 50 / 100)) / 2)


def test_data_roots_follow_the_environment(monkeypatch):
    monkeypatch.setenv('IMAGENET_ROOT', '/datasets/imagenet-1k')
    monkeypatch.setenv('CIFAR100_ROOT', '/datasets/cifar-100')
    for path, root in ((CONFIGS / 'incubate_vit_b.py', '/datasets/imagenet-1k'),
                       (CONFIGS / 'e2e_vit_h.py', '/datasets/imagenet-1k'),
                       (CIFAR_PIPELINE, '/datasets/cifar-100')):
        cfg = Config.fromfile(str(path))
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            assert cfg[loader].dataset.data_root == root, (path.name, loader)


def test_imagenet_pipelines_turn_an_image_into_a_224_input(load):
    cfg = load(CONFIGS / 'e2e_vit_b.py')
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for pipeline in (cfg.train_dataloader.dataset.pipeline, cfg.val_dataloader.dataset.pipeline):
        assert pipeline[0].type == 'LoadImageFromFile'
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            transforms = [TRANSFORMS.build(t) for t in pipeline[1:]]
        result = dict(img=image.copy(), img_shape=image.shape[:2], ori_shape=image.shape[:2], gt_label=3)
        for transform in transforms:
            result = transform(result)
        assert tuple(result['inputs'].shape) == (3, 224, 224)
        assert result['data_samples'].gt_label.tolist() == [3]


def test_cifar100_deit_tiny_recipe(load):
    cfg = load(CIFAR_PIPELINE)
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.img_size, backbone.patch_size) == ('deit-tiny', 32, 4)
    assert cfg.model.head.num_classes == 100 and cfg.model.head.in_channels == 192
    assert build_layout(cfg).depths == (3, 3, 3, 3)
    cifar_phases = {'meta': (300, 0.0, True), 'incubate': (100, 0.1, True), 'finetune': (100, 0.1, False),
                    'e2e': (300, 0.1, True)}
    phases = derived_phases(cfg)
    for (phase, _), phase_cfg in phases.items():
        epochs, drop_path, warmup = cifar_phases[phase]
        check_recipe(phase_cfg, epochs, drop_path, batch=512, accumulation=1, warmup=warmup,
                     num_gpus=1, effective_batch=512, lr=5e-4)
        assert phase_cfg.train_dataloader.dataset.type == 'CIFAR100'
        assert (phase_cfg.optim_wrapper.get('clip_grad') or {}).get('max_norm') == \
            (1.0 if phase == 'finetune' else None)
        layers = phase_cfg.model.backbone.arch['num_layers']
        assert layers == {'meta': 4, 'incubate': 6, 'finetune': 12, 'e2e': 12}[phase]

    e2e = load(CIFAR_E2E)
    assert 'incubation' not in e2e
    for key in ('model', 'train_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr'):
        assert phases['e2e', None][key] == with_explicit_arch(e2e)[key], key
    full = build_on_meta(e2e.model)
    assert num_params(full) == pytest.approx(5.38e6, rel=1e-2)  # DeiT-Ti minus 900 classes and 132 tokens

    # the training pipeline really runs on a 32x32 image
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        transforms = [TRANSFORMS.build(t) for t in cfg.train_dataloader.dataset.pipeline]
    result = dict(img=np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8),
                  img_shape=(32, 32), ori_shape=(32, 32), gt_label=7)
    for transform in transforms:
        result = transform(result)
    assert tuple(result['inputs'].shape) == (3, 32, 32)


def test_cifar100_hybrid_trains_only_its_module_for_real(load):
    incubate = phase_config(load(CIFAR_PIPELINE), 'incubate', 1)
    model_cfg = copy.deepcopy(incubate.model)
    model_cfg.data_preprocessor = copy.deepcopy(incubate.data_preprocessor)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)  # PyTorch's default init: enough for gradients
        from mmpretrain.structures import DataSample
        batch = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(4)],
                     data_samples=[DataSample().set_gt_label(label) for label in (0, 5, 42, 99)])
        data = model.data_preprocessor(batch, training=True)  # Mixup / CutMix on the batch
        losses = model(**data, mode='loss')
    loss = sum(value for key, value in losses.items() if 'loss' in key)
    assert torch.isfinite(loss)
    loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    names = [name for name, _ in model.named_parameters()]
    assert trained == module_param_names(names, (1, 3, 1, 1), 1)
