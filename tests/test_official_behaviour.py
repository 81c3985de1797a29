"""Our pipeline configs train as the official code does (LeapLabTHU/Deep-Incubation, on DeiT and timm):

- the learning rate of every epoch is that of timm's ``CosineLRScheduler`` as the official ``main.py``
  creates and steps it (``mmincubation.TimmCosineLR``);
- no phase clips gradients (the official fine-tune passes ``--clip-grad 1`` to an FP32 path that ignores it);
- every Linear weight and the class token start truncated-normal std 0.02, Linear biases zero (timm's ViT);
- the learning rate follows the actual batch, lr = 5e-4 x (batch per GPU x accumulation x GPUs) / 512.

Checked on the phase configs the runner derives (``phase_recipe``), for the ImageNet ViT-B/L/H pipelines
and the Fashion-MNIST demo and benchmark ones. The reference values are computed here independently of
mmincubation, from the official code's rules.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from torch import nn

import mmincubation  # noqa: F401  (registers mmincubation.*)
from mmincubation.engine.runner.phase_config import build_layout, phase_recipe
from mmincubation.engine.schedulers import TimmCosineLR

# No training here: schedulers step without optimizer steps.
pytestmark = pytest.mark.filterwarnings('ignore:Detected call of `scheduler.step\\(\\)` before:UserWarning')

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
IMAGENET = {size: CONFIGS / f'incubate_vit_{size}.py' for size in 'blh'}
FASHION = {
    'demo': CONFIGS / 'incubate_demo_fashion_mnist.py',
    'demo_dmt': CONFIGS / 'incubate_demo_fashion_mnist_dmt.py',
    'benchmark': CONFIGS / 'benchmarks' / 'incubate_deep-vit-16x32-p7_fashion-mnist.py',
    'benchmark_dmt': CONFIGS / 'benchmarks' / 'incubate_deep-vit-16x32-p7_fashion-mnist_dmt.py',
}
PIPELINES = {**{f'vit_{size}': path for size, path in IMAGENET.items()}, **FASHION}
PHASES = (('meta', None), ('incubate', 0), ('incubate', -1), ('finetune', None), ('e2e', None))
OFFICIAL_WARMUP = {'meta': 20, 'incubate': 20, 'finetune': 0, 'e2e': 20}  # TRAINING.md's --warmup-epochs


def derive(cfg: Config, phase: str, module: int | None) -> Config:
    """A phase's config; hybrids with scratch modules (their own fresh init; grown ones need a meta model)."""
    if module is not None and module < 0:
        module += build_layout(cfg).num_modules
    if 'incubation' in cfg:
        cfg.incubation.module_init = 'scratch'
    return phase_recipe(cfg, phase, module)


# ------------------------------------------------------------------------------------- the official rules

def timm_cosine_lr(t: int, base: float, t_initial: int, warmup_t: int, warmup_lr_init: float = 1e-6,
                   lr_min: float = 1e-5) -> float:
    """timm's ``CosineLRScheduler._get_lr(t)`` as DeiT's ``create_scheduler`` builds it: t_mul 1, decay
    rate 1, cycle_limit 1, warmup_prefix False, no noise."""
    if t < warmup_t:
        return warmup_lr_init + t * (base - warmup_lr_init) / warmup_t
    i = t // t_initial
    if i < 1:
        t_curr = t - t_initial * i
        return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t_curr / t_initial))
    return lr_min


def official_epoch_lrs(base: float, epochs: int, warmup: int) -> list[float]:
    """The lr each epoch trains at in the official ``main.py``: the scheduler's constructor sets warmup_lr_init
    (or leaves base without warm-up), then ``lr_scheduler.step(epoch)`` runs after each epoch."""
    lr = 1e-6 if warmup else base
    lrs = []
    for epoch in range(epochs):
        lrs.append(lr)
        lr = timm_cosine_lr(epoch, base, epochs, warmup)
    return lrs


def official_lr(batch_per_gpu: int, accumulation: int, world_size: int) -> float:
    """main.py: linear_scaled_lr = args.lr * batch_size * update_freq * world_size / 512, args.lr = 5e-4."""
    return 5e-4 * batch_per_gpu * accumulation * world_size / 512


# ------------------------------------------------------------------------------------------------ helpers

class TinyViTParams(nn.Module):
    """Parameters named as a ViT's, so paramwise_cfg makes its usual groups (decay / no decay)."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 2, 4))
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)


class FakeRunner:
    """What ``Runner.scale_lr`` reads from a runner, with the world size we choose."""

    def __init__(self, cfg: Config, world_size: int):
        self._train_dataloader = cfg.train_dataloader
        self.world_size = world_size
        self.logger = MMLogger.get_current_instance()
        self.param_schedulers = cfg.param_scheduler


def build_optimizer(cfg: Config, world_size: int) -> OptimWrapper:
    """The phase's optimizer, its lr scaled by MMEngine's own ``Runner.scale_lr`` for ``world_size`` processes."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg.pop('constructor', None)  # the hybrid's constructor needs frozen parameters
    optim_cfg.type = 'OptimWrapper'  # the configs' bfloat16 AmpOptimWrapper needs a GPU; lr is the same
    optim_cfg.pop('dtype', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        optim_wrapper = build_optim_wrapper(TinyViTParams(), optim_cfg)
    Runner.scale_lr(FakeRunner(cfg, world_size), optim_wrapper, cfg.get('auto_scale_lr'))
    return optim_wrapper


def lrs_of_run(cfg: Config, epoch_length: int, world_size: int = 1) -> tuple[list[list[float]], bool]:
    """Every parameter group's lr at each step of the phase, with schedulers built and stepped as the
    runner does (``end`` defaults to max_epochs / max_iters; stepped per epoch or per iteration)."""
    optim_wrapper = build_optimizer(cfg, world_size)
    by_epoch = all(s.get('by_epoch', True) and not s.get('convert_to_iter_based') for s in cfg.param_scheduler)
    steps = cfg.train_cfg.max_epochs * (1 if by_epoch else epoch_length)
    schedulers = []
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for scheduler in copy.deepcopy(cfg.param_scheduler):
            scheduler.setdefault('end', cfg.train_cfg.max_epochs if scheduler.get('by_epoch', True)
                                 else cfg.train_cfg.max_epochs * epoch_length)
            schedulers.append(PARAM_SCHEDULERS.build(
                scheduler, default_args=dict(optimizer=optim_wrapper, epoch_length=epoch_length)))
    lrs = []
    for _ in range(steps):
        lrs.append([group['lr'] for group in optim_wrapper.optimizer.param_groups])
        for scheduler in schedulers:
            scheduler.step()
    return lrs, by_epoch


def assert_close(ours: list[float], theirs: list[float], rel: float = 1e-9) -> None:
    assert len(ours) == len(theirs)
    worst = max(abs(a - b) / b for a, b in zip(ours, theirs))
    assert worst <= rel, f'largest relative difference {worst:.3g}'


# ----------------------------------------------------------------------------------- 1. learning-rate shape

@pytest.mark.parametrize('size', IMAGENET)
def test_imagenet_lr_of_every_epoch_is_the_official_one(load, size):
    """8 GPUs as the official runs: lr 2e-3 for 2048 images per step in every phase."""
    cfg = load(IMAGENET[size])
    for phase, module in PHASES:
        phase_cfg = derive(cfg, phase, module)
        lrs, by_epoch = lrs_of_run(phase_cfg, epoch_length=1251, world_size=8)
        assert by_epoch  # stepped per epoch, as the official loop
        epochs = phase_cfg.train_cfg.max_epochs
        assert epochs == {'meta': 300, 'incubate': 100, 'finetune': 100, 'e2e': 300}[phase]
        expected = official_epoch_lrs(2e-3, epochs, OFFICIAL_WARMUP[phase])
        for group in range(len(lrs[0])):
            assert_close([lr[group] for lr in lrs], expected)
    # a few values by hand: warm-up line, the drop where it ends, the cosine, the end
    meta = [lr[0] for lr in lrs_of_run(derive(cfg, 'meta', None), 1251, world_size=8)[0]]
    assert meta[0] == meta[1] == 1e-6 and meta[11] == pytest.approx(1e-6 + 10 * (2e-3 - 1e-6) / 20, rel=1e-12)
    assert meta[21] == pytest.approx(1e-5 + (2e-3 - 1e-5) * (1 + math.cos(math.pi * 20 / 300)) / 2, rel=1e-12)
    finetune = [lr[0] for lr in lrs_of_run(derive(cfg, 'finetune', None), 1251, world_size=8)[0]]
    assert finetune[0] == finetune[1] == pytest.approx(2e-3, rel=1e-12)
    assert finetune[51] == pytest.approx(1e-5 + (2e-3 - 1e-5) / 2, rel=1e-12)


@pytest.mark.parametrize('name', FASHION)
def test_fashion_mnist_lr_of_every_iteration_follows_timm_cosine(load, name):
    """The demo's phases last 2-3 epochs: the same curve per iteration (warm-up in iterations, no lag)."""
    cfg = load(FASHION[name])
    epoch_length = 94  # e.g. 12k images / 128
    for phase, module in PHASES:
        phase_cfg = derive(cfg, phase, module)
        [scheduler] = phase_cfg.param_scheduler
        assert scheduler.type == 'mmincubation.TimmCosineLR' and scheduler.by_epoch is False
        warmup = scheduler.warmup
        assert warmup == (0 if phase == 'finetune' else 10 if ('benchmark' in name or
                                                                (name == 'demo_dmt' and phase == 'incubate'))
                          else 50)
        lrs, by_epoch = lrs_of_run(phase_cfg, epoch_length)
        assert not by_epoch
        iters = phase_cfg.train_cfg.max_epochs * epoch_length
        expected = [timm_cosine_lr(i, 1e-3, iters, warmup) for i in range(iters)]
        assert_close([lr[0] for lr in lrs], expected)


def test_timm_cosine_lr_closed_form_conversion_and_resume():
    def lrs(scheduler_cfg, steps, epoch_length=None, resume_at=None):
        param = nn.Parameter(torch.zeros(1))
        optim_wrapper = OptimWrapper(torch.optim.AdamW([param], lr=2e-3))
        default_args = dict(optimizer=optim_wrapper, epoch_length=epoch_length)
        scheduler = PARAM_SCHEDULERS.build(dict(scheduler_cfg), default_args=default_args)
        out = []
        for step in range(steps):
            if step == resume_at:  # a fresh optimizer and scheduler, loaded as MMEngine's Runner.resume does
                optimizer_state, scheduler_state = optim_wrapper.state_dict(), scheduler.state_dict()
                optim_wrapper = OptimWrapper(torch.optim.AdamW([param], lr=2e-3))
                scheduler = PARAM_SCHEDULERS.build(dict(scheduler_cfg),
                                                   default_args=dict(default_args, optimizer=optim_wrapper))
                optim_wrapper.load_state_dict(optimizer_state)
                scheduler.load_state_dict(scheduler_state)
            out.append(optim_wrapper.optimizer.param_groups[0]['lr'])
            scheduler.step()
        return out

    base = dict(type='mmincubation.TimmCosineLR', warmup=20, warmup_lr=1e-6, eta_min=1e-5, end=300)
    # lag 0: timm's lr(t) at step t, the closed form
    assert_close(lrs(base, 300), [timm_cosine_lr(t, 2e-3, 300, 20) for t in range(300)], rel=1e-12)
    # lag 1: DeiT's stepping; resuming from a state dict continues the same curve
    assert_close(lrs(dict(base, lag=1), 300, resume_at=137), official_epoch_lrs(2e-3, 300, 20), rel=1e-12)
    # per epoch -> per iteration: warm-up, length and lag in iterations
    converted = lrs(dict(base, end=30, warmup=2, convert_to_iter_based=True), 300, epoch_length=10)
    assert_close(converted, [timm_cosine_lr(i, 2e-3, 300, 20) for i in range(300)], rel=1e-12)
    # no warm-up: cosine from the full rate; past T_max: eta_min
    assert_close(lrs(dict(base, warmup=0, T_max=100, end=120), 120),
                 [timm_cosine_lr(t, 2e-3, 100, 0) for t in range(120)], rel=1e-12)
    with pytest.raises(ValueError, match='needs the length of its cosine'):
        TimmCosineLR(OptimWrapper(torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.)), warmup=2)


# ------------------------------------------------------------------------------------- 2. gradient clipping

@pytest.mark.parametrize('name', PIPELINES)
def test_no_phase_clips_gradients(load, name):
    cfg = load(PIPELINES[name])
    assert 'clip_grad' not in (cfg.incubation.finetune.get('optim_wrapper') or {})
    for phase, module in PHASES:
        assert derive(cfg, phase, module).optim_wrapper.get('clip_grad') is None, phase


# ---------------------------------------------------------------------------------------- 3. initialisation

INIT_CASES = [(name, phase, module) for name in ('demo', 'benchmark')
              for phase, module in (('meta', None), ('incubate', 0), ('incubate', -1), ('finetune', None))]
# ImageNet: ViT-B's meta model, last hybrid (with the head) and full model; ViT-L/H (the same backbone
# class and model base at other widths) their meta models only: a full ViT-H takes ~40 s to initialise
# on two CPU cores.
INIT_CASES += [('vit_b', 'meta', None), ('vit_b', 'incubate', -1), ('vit_b', 'finetune', None),
               ('vit_l', 'meta', None), ('vit_h', 'meta', None)]


def init_violations(model: nn.Module) -> list[str]:
    """Where ``model`` departs from timm's ViT initialisation: every Linear weight std 0.02 (within 10 %;
    timm and MMEngine truncate at +-2 absolute, void at std 0.02), Linear biases zero, and the class
    token and position embedding std 0.02 (within 4 standard errors of a std estimate, at least 10 %)."""
    violations = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = module.weight.std().item()
            if abs(std / 0.02 - 1) >= 0.1:
                violations.append(f'{name}.weight std {std:.4f}')
            if module.bias is not None and torch.count_nonzero(module.bias):
                violations.append(f'{name}.bias not zero')
    for token in ('cls_token', 'pos_embed'):
        values = getattr(model.backbone, token)
        if abs(values.std().item() / 0.02 - 1) >= max(0.1, 4 / math.sqrt(2 * values.numel())):
            violations.append(f'backbone.{token} std {values.std().item():.4f}')
    return violations


def build_and_init(model_cfg) -> nn.Module:
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()  # hybrid: no meta checkpoint given, so every module starts fresh
    return model


@pytest.mark.parametrize('name,phase,module', INIT_CASES)
def test_every_linear_and_the_class_token_start_as_timm(load, name, phase, module):
    model = build_and_init(derive(load(PIPELINES[name]), phase, module).model)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len([name for name in linears if '.ffn.' in name]) == 2 * len(model.backbone.layers)
    assert 'head.layers.head' in linears
    assert init_violations(model) == []


def test_stock_mmpretrain_init_differs_where_we_fix_it(load):
    """The control: mmpretrain's own VisionTransformer fails the check on the FFNs and the class token."""
    model_cfg = derive(load(FASHION['demo']), 'finetune', None).model
    model_cfg.backbone.type = 'VisionTransformer'
    model_cfg.backbone.init_cfg = dict(type='TruncNormal', layer='Linear', std=.02)  # what our configs had
    violations = init_violations(build_and_init(model_cfg))
    ffn = [v for v in violations if '.ffn.' in v]
    assert len(ffn) == 2 * 2 * 8  # Xavier-uniform weights (std 0.079 at width 64) and N(0, 1e-6) biases
    assert 'backbone.cls_token std 0.0000' in violations and len(violations) == len(ffn) + 1


def test_checkpoints_keep_mmpretrain_vision_transformer_keys(load):
    phase_cfg = derive(load(FASHION['demo']), 'finetune', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device('meta'):
        ours = MODELS.build(copy.deepcopy(phase_cfg.model))
        stock_cfg = copy.deepcopy(phase_cfg.model)
        stock_cfg.backbone.type = 'VisionTransformer'
        stock = MODELS.build(stock_cfg)
    assert type(ours.backbone).__name__ == 'TimmInitVisionTransformer'
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in stock.state_dict().items()}


# -------------------------------------------------------------------------------------- 4. lr scaling

@pytest.mark.parametrize('name', PIPELINES)
def test_lr_follows_the_actual_batch_in_every_phase(load, name):
    cfg = load(PIPELINES[name])
    imagenet = name.startswith('vit_')
    for phase, module in PHASES:
        phase_cfg = derive(cfg, phase, module)
        assert phase_cfg.auto_scale_lr.enable is True
        batch = phase_cfg.train_dataloader.batch_size
        accumulation = phase_cfg.optim_wrapper.get('accumulative_counts', 1)
        for world_size in (1, 2, 8, 16):
            lrs = [group['lr'] for group in build_optimizer(phase_cfg, world_size).optimizer.param_groups]
            # ImageNet: the official rule; the demo: its own lr 1e-3 for 128 images per step
            expected = (official_lr(batch, accumulation, world_size) if imagenet
                        else 1e-3 * batch * accumulation * world_size / 128)
            assert lrs == [pytest.approx(expected, rel=1e-12)] * len(lrs), (phase, world_size)
        if imagenet:  # the reference run: 8 GPUs, 2048 images per step, lr 2e-3
            assert batch * accumulation * 8 == 2048 and official_lr(batch, accumulation, 8) == 2e-3

    # --cfg-options auto_scale_lr.enable=False turns it off in every phase
    cfg.merge_from_dict({'auto_scale_lr.enable': False})
    for phase, module in PHASES:
        phase_cfg = derive(cfg, phase, module)
        lrs = [group['lr'] for group in build_optimizer(phase_cfg, 1).optimizer.param_groups]
        assert lrs == [phase_cfg.optim_wrapper.optimizer.lr] * len(lrs), phase


@pytest.mark.parametrize('size', IMAGENET)
def test_e2e_baseline_configs_scale_lr_too(load, size):
    cfg = load(CONFIGS / f'e2e_vit_{size}.py')
    assert cfg.auto_scale_lr.enable is True
    for world_size in (1, 8):
        [lr] = {group['lr'] for group in build_optimizer(cfg, world_size).optimizer.param_groups}
        assert lr == pytest.approx(official_lr(64, 4, world_size), rel=1e-12)
