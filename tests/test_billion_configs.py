"""Billion-parameter ViTs and bfloat16: configs/incubate_{vit,dinov2}_g.py and their E2E twins, and the precision of
every phase of every shipped config.

The two pipelines build every phase at full size on the meta device (no memory, no data); the full models are
counted against mmpretrain's metafiles (read from the installed package) and against the count written out here
from width, depth and MLP size; each phase's recipe names the runner, strategy and activation checkpointing the
config chose, and the runners built from them (at width 16, the same 40 blocks) are those. Every GPU config trains
every phase in bfloat16 (AmpOptimWrapper) and goes back to FP32 with ``--cfg-options optim_wrapper.type=OptimWrapper``;
the CPU demos never use AmpOptimWrapper, which MMEngine 0.10.7 refuses without a GPU.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import RUNNERS, DefaultScope
from test_full_size_backbones import assert_trains_the_same, metafile_parameters, num_params, with_full_layout

from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.fit_checks import build_on_meta
from mmincubation.engine.runner.phase_runner import PhaseRunner
from mmincubation.engine.runner.strategies import PhaseFlexibleRunner, PhaseFSDPStrategy, build_phase_runner
from mmincubation.phases import METHODS, all_phases
from tools.train import merge_args, parse_args

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
BILLION = ('vit_g', 'dinov2_g')
DEPTH, K, CLASSES = 40, 4, 1000
TOKENS = (224 // 14) ** 2 + 1  # 16 x 16 patches of 14 px and the class token
#: Width, MLP size (DINOv2's fused SwiGLU: 2/3 of the arch's 6144, rounded to 8) of each model.
SHAPES = {'vit_g': (1408, 6144), 'dinov2_g': (1536, 4096)}
BLOCKS = [f'backbone.layers.{block}' for block in range(DEPTH)]


def block_params(name: str) -> int:
    """One block: two LayerNorms, qkv and output projection (with biases), the MLP; DINOv2's layer scales."""
    width, mlp = SHAPES[name]
    attention = 4 * width * width + 4 * width
    if name == 'dinov2_g':  # w12: width -> 2 x mlp (gate and value), w3: mlp -> width; gamma1 and gamma2
        return 2 * 2 * width + attention + (width * 2 * mlp + 2 * mlp) + (mlp * width + width) + 2 * width
    return 2 * 2 * width + attention + (width * mlp + mlp) + (mlp * width + width)


def stem_params(name: str) -> int:
    """Patch embedding (3 x 14 x 14 convolution with bias), class token, position embedding at 224 px."""
    width, _ = SHAPES[name]
    return 3 * 14 * 14 * width + width + width + TOKENS * width


def analytic_params(name: str, blocks: int, head: bool = True) -> int:
    """A classifier of ``blocks`` blocks: stem, blocks, final LayerNorm and (``head``) the 1000-class head."""
    width, _ = SHAPES[name]
    return stem_params(name) + blocks * block_params(name) + 2 * width + head * (width * CLASSES + CLASSES)


def stack_depth(model: torch.nn.Module) -> int:
    return len(model.backbone.layers)


@pytest.fixture(scope='module')
def pipelines() -> dict[str, Config]:
    loaded = {}
    for name in BILLION:
        cfg = Config.fromfile(str(CONFIGS / f'incubate_{name}.py'))
        cfg.work_dir = 'unused'
        loaded[name] = cfg
    return loaded


# --- full size -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', BILLION)
def test_every_phase_builds_at_full_size_with_the_analytic_parameter_count(pipelines, name: str) -> None:
    cfg = pipelines[name]
    layout = build_layout(cfg)
    assert layout.depths == (10, 10, 10, 10) and layout.num_modules == K
    full = build_on_meta(phase_recipe(cfg, 'finetune'))
    assert stack_depth(full) == DEPTH and num_params(full) == analytic_params(name, DEPTH)
    assert num_params(build_on_meta(phase_recipe(cfg, 'e2e'))) == num_params(full)
    meta = build_on_meta(phase_recipe(cfg, 'meta'))
    assert stack_depth(meta) == K and num_params(meta) == analytic_params(name, K)
    per_block = block_params(name)
    for module in range(K):
        hybrid = build_on_meta(phase_recipe(cfg, 'incubate', module))
        assert type(hybrid).__name__ == 'IncubationClassifier' and stack_depth(hybrid) == K - 1 + 10
        assert num_params(hybrid) == analytic_params(name, K - 1 + 10)
        # trained: module k's 10 blocks, with the stem (first module) or the final norm and head (last)
        trained = sum(p.numel() for p in hybrid.parameters() if p.requires_grad)
        width, _ = SHAPES[name]
        ends = {0: stem_params(name), K - 1: 2 * width + width * CLASSES + CLASSES}.get(module, 0)
        assert trained == 10 * per_block + ends, module


def test_vit_g_against_mmpretrains_eva_g_entry(pipelines) -> None:
    """mmpretrain's only giant of this shape is EVA's (``BEiTViT`` arch 'eva-g', patch 14) with the 1000-class head,
    counted at 336 px: 320 more position-table rows (24 x 24 + 1 tokens against our 257), and BEiT's separate q and
    v biases without a k bias (40 x 1408 fewer). Nothing else differs: 1,012,611,432 here, 0.04 % under it."""
    published = metafile_parameters('eva', 'beit-g-p14_eva-30m-in21k-pre_3rdparty_in1k-336px')
    assert published == 1_013_005_672
    width = SHAPES['vit_g'][0]
    full = num_params(build_on_meta(phase_recipe(pipelines['vit_g'], 'finetune')))
    assert full == published - ((336 // 14) ** 2 + 1 - TOKENS) * width + DEPTH * width == 1_012_611_432
    assert full == pytest.approx(published, rel=0.01)


def test_dinov2_g_backbone_is_mmpretrains_at_224_px(pipelines) -> None:
    """mmpretrain's metafile: 1,136,000,000 (rounded) for the 518 px backbone (37 x 37 + 1 position rows)."""
    published = metafile_parameters('dinov2', 'vit-giant-p14_dinov2-pre_3rdparty')
    full = build_on_meta(phase_recipe(pipelines['dinov2_g'], 'finetune'))
    backbone = sum(p.numel() for name, p in full.named_parameters() if name.startswith('backbone.'))
    assert backbone == analytic_params('dinov2_g', DEPTH, head=False) == 1_134_769_664
    assert backbone == pytest.approx(published, rel=0.01) == pytest.approx(1.136e9, rel=0.01)
    width = SHAPES['dinov2_g'][0]
    assert round(backbone + ((518 // 14) ** 2 + 1 - TOKENS) * width, -6) == published
    # the model of tests/test_dinov2.py and of mmpretrain's dinov2 config: layer scale, fused SwiGLU
    layer = full.backbone.layers[0]
    assert type(layer.ffn).__name__ == 'SwiGLUFFNFused' and layer.ffn.w3.in_features == 4096
    assert type(layer.attn.gamma1).__name__ == 'LayerScale'


@pytest.mark.parametrize('name', BILLION)
def test_mmpretrains_dinov2_and_eva_g_archs_are_ours(pipelines, name: str) -> None:
    backbone = Config.fromfile(str(CONFIGS / f'incubate_{name}.py')).model.backbone
    assert backbone.arch == {'vit_g': 'eva-g', 'dinov2_g': 'dinov2-g'}[name]
    assert (backbone.img_size, backbone.patch_size, backbone.qkv_bias) == (224, 14, True)
    assert backbone.drop_path_rate == 0.7  # the full model's: why in its model base
    if name == 'dinov2_g':
        stock = Config.fromfile(str(Path(__import__('mmpretrain').__file__).parent / '.mim' / 'configs' / 'dinov2' /
                                    'vit-giant-p14_dinov2-pre_headless.py')).model.backbone
        assert (backbone.layer_scale_init_value, backbone.layer_cfgs) == (stock.layer_scale_init_value,
                                                                          stock.layer_cfgs)


# --- runners and strategies -----------------------------------------------------------------------------------

@pytest.mark.parametrize('name', BILLION)
def test_each_phase_recipe_names_its_runner_strategy_and_checkpointing(pipelines, name: str) -> None:
    cfg = pipelines[name]
    meta = phase_recipe(cfg, 'meta')
    assert not {'runner_type', 'strategy', 'activation_checkpointing'} & set(meta)  # the stock Runner's DDP
    for module in range(K):
        incubate = phase_recipe(cfg, 'incubate', module)
        assert (incubate.runner_type, incubate.strategy) == ('FlexibleRunner', dict(type='DDPStrategy'))
        assert 'activation_checkpointing' not in incubate
    for phase in ('finetune', 'e2e'):
        recipe = phase_recipe(cfg, phase)
        assert (recipe.runner_type, recipe.strategy) == ('FlexibleRunner', dict(type='FSDPStrategy'))
        assert recipe.activation_checkpointing == BLOCKS
    # the option the schedule offers for smaller GPUs: a hybrid's own 3 meta blocks and 10 module blocks
    cfg = copy.deepcopy(cfg)
    cfg.merge_from_dict({'incubation.incubate.activation_checkpointing': 'blocks'})
    assert phase_recipe(cfg, 'incubate', 2).activation_checkpointing == BLOCKS[:K - 1 + 10]


@pytest.mark.parametrize('name', BILLION)
def test_the_e2e_twin_is_the_pipelines_e2e_phase(pipelines, name: str) -> None:
    e2e = phase_recipe(pipelines[name], 'e2e')
    twin = Config.fromfile(str(CONFIGS / f'e2e_{name}.py'))
    assert 'incubation' not in twin
    assert RUNNERS.get(twin.runner_type) is PhaseFlexibleRunner  # what the e2e phase's 'FlexibleRunner' runs on
    assert twin.custom_imports == dict(imports=['mmincubation'], allow_failed_imports=False)
    assert twin.strategy == e2e.strategy and twin.activation_checkpointing == e2e.activation_checkpointing
    assert_trains_the_same(e2e, with_full_layout(twin))


def narrow(cfg: Config) -> Config:
    """``cfg`` at width 16 (the same 40 blocks, K=4 modules of 10): its runners build in a second."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.arch = dict(embed_dims=16, num_layers=DEPTH, num_heads=2, feedforward_channels=48)
    cfg.model.head.in_channels = 16
    return cfg


def checkpointed(model: torch.nn.Module) -> list[str]:
    """The blocks whose forward mmincubation.compat.turn_on_activation_checkpointing wrapped."""
    return [f'backbone.layers.{block}' for block, layer in enumerate(model.backbone.layers)
            if hasattr(layer.forward, '__wrapped__')]


@pytest.mark.parametrize('name', BILLION)
def test_the_runners_built_from_the_recipes_and_the_twin(pipelines, name: str, tmp_path) -> None:
    cfg = narrow(pipelines[name])
    runners = {}
    for phase, module in (('meta', None), ('incubate', 1), ('finetune', None), ('e2e', None)):
        run = phase_recipe(cfg, phase, module)
        run.work_dir = str(tmp_path / f'{phase}{module}')
        runners[phase] = build_phase_runner(run)
    twin = narrow(Config.fromfile(str(CONFIGS / f'e2e_{name}.py')))
    twin.work_dir, twin.launcher = str(tmp_path / 'twin'), 'none'
    runners['twin'] = RUNNERS.build(twin)  # as tools/train.py builds a plain config that names a runner

    assert type(runners['meta']) is PhaseRunner
    assert type(runners['incubate']) is PhaseFlexibleRunner
    assert runners['incubate'].strategy.model_wrapper['type'] == 'MMDistributedDataParallel'
    assert checkpointed(runners['incubate'].model) == []
    for phase in ('finetune', 'e2e', 'twin'):
        runner = runners[phase]
        assert type(runner) is PhaseFlexibleRunner and type(runner.strategy) is PhaseFSDPStrategy, phase
        wrapper = runner.strategy.model_wrapper
        assert wrapper['use_orig_params'] is True, phase
        block_class = type(runner.model.get_submodule(BLOCKS[0]))
        assert wrapper['auto_wrap_policy']._module_classes == {block_class}, phase  # one FSDP unit per block
        assert checkpointed(runner.model) == BLOCKS, phase


# --- bfloat16 -------------------------------------------------------------------------------------------------

def shipped(pattern: str) -> list[Path]:
    return sorted(path for path in CONFIGS.glob(pattern)
                  if '_base_' not in path.parts and 'downstream' not in path.parts)


#: The classification configs: the CPU demos (and benchmarks/ built on them) stay FP32, all others are for GPUs.
CLASSIFIERS = [str(path.relative_to(CONFIGS)) for path in shipped('**/incubate_*.py') + shipped('**/e2e_*.py')]
CPU_CONFIGS = [name for name in CLASSIFIERS if 'fashion-mnist' in name or 'fashion_mnist' in name]
GPU_CONFIGS = [name for name in CLASSIFIERS if name not in CPU_CONFIGS]


def every_recipe(path: Path) -> list[tuple[str, Config]]:
    """Each phase recipe of a pipeline (every method's phases), or a plain config as it is."""
    cfg = Config.fromfile(str(path))
    cfg.work_dir = 'unused'
    return every_recipe_of(cfg)


def every_recipe_of(cfg: Config) -> list[tuple[str, Config]]:
    if 'incubation' not in cfg:
        return [('plain', cfg)]
    return [(str(phase), phase_recipe(cfg, phase.name, phase.module))
            for phase in all_phases(build_layout(cfg).num_modules, tuple(METHODS)) if phase.spec.trains]


def test_the_config_lists_hold_what_they_should() -> None:
    assert len(GPU_CONFIGS) == 28 and len(CPU_CONFIGS) == 7
    assert {'incubate_vit_g.py', 'e2e_dinov2_g.py', 'cifar100/e2e_deit_t_32.py', 'e2e_convnext_l.py'} <= \
        set(GPU_CONFIGS)
    assert {'incubate_demo_fashion_mnist_swin.py', 'benchmarks/incubate_deep-vit-16x32-p7_fashion-mnist_dmt.py'} <= \
        set(CPU_CONFIGS)


@pytest.mark.parametrize('name', GPU_CONFIGS)
def test_every_phase_of_every_gpu_config_trains_in_bfloat16(name: str) -> None:
    for phase, recipe in every_recipe(CONFIGS / name):
        assert recipe.optim_wrapper.type == 'AmpOptimWrapper' and recipe.optim_wrapper.dtype == 'bfloat16', phase
        assert 'optimizer' in recipe.optim_wrapper, phase


@pytest.mark.parametrize('name', CPU_CONFIGS)
def test_the_cpu_demos_stay_fp32(name: str) -> None:
    for phase, recipe in every_recipe(CONFIGS / name):
        assert recipe.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper', phase
        assert 'dtype' not in recipe.optim_wrapper and 'bf16_optim_wrapper' not in recipe, phase


@pytest.mark.parametrize('name,optimizer,accumulation', [
    ('incubate_vit_g.py', 'AdamW', {'meta': 1, 'incubate module 0': 2, 'finetune': 4, 'e2e': 4}),
    ('incubate_convnext_b.py', 'AdamW', {'meta': None, 'incubate module 0': None, 'finetune': None, 'e2e': None}),
    ('incubate_vit_b_deit3.py', 'Lamb', {'meta': 4, 'incubate module 0': 4, 'finetune': 4, 'e2e': 4}),
    ('cifar100/e2e_deit_t_128.py', 'AdamW', {'plain': None}),
])
def test_fp32_as_the_official_runs_with_one_option(name: str, optimizer: str, accumulation: dict) -> None:
    """``--cfg-options optim_wrapper.type=OptimWrapper`` (our tools/train.py drops the AMP-only dtype): every phase's
    optimizer wrapper is MMEngine's FP32 one, built here on the CPU, with the optimizer and gradient accumulation
    the bf16 recipe has."""
    bf16 = dict(every_recipe(CONFIGS / name))
    path = str(CONFIGS / name)
    cfg = merge_args(Config.fromfile(path), parse_args([path, '--cfg-options', 'optim_wrapper.type=OptimWrapper']))
    cfg.work_dir = 'unused'
    recipes = dict(every_recipe_of(cfg))
    for phase, counts in accumulation.items():
        fp32, amp = recipes[phase].optim_wrapper, bf16[phase].optim_wrapper
        assert fp32.type == 'OptimWrapper' and 'dtype' not in fp32, phase
        assert {key: value for key, value in amp.items() if key not in ('type', 'dtype')} == \
            {key: value for key, value in fp32.items() if key != 'type'}, phase
        assert fp32.get('accumulative_counts') == counts and fp32.optimizer.type == optimizer, phase
        plain = {key: value for key, value in fp32.items() if key not in ('constructor', 'paramwise_cfg')}
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            built = build_optim_wrapper(torch.nn.Linear(2, 2), plain)
        assert type(built).__name__ == 'OptimWrapper' and built._accumulative_counts == (counts or 1), phase
        assert type(built.optimizer).__name__ == optimizer, phase

