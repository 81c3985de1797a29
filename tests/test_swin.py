"""Swin Transformer through its backbone spec: stage-aware layouts, hybrids, growth, the whole pipeline."""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import torch
from backbone_checks import grown_logits_equal_meta, run_tiny_pipeline, scored_in_fresh_process
from hypothesis import given, settings
from hypothesis import strategies as st
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.backbones import SWIN, VIT, spec_of
from mmincubation.checkpoint import META_KEY, CheckpointError, save_atomic
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.downstream import resolve_settings
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.fit_checks import build_on_meta, check_pretrained_backbone, full_model_shapes
from mmincubation.engine.runner.records import load_records
from mmincubation.layout import LayoutError, ModuleLayout, convert_state_dict

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'incubate_demo_fashion_mnist_swin.py'
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


@st.composite
def staged_layouts(draw: st.DrawFn) -> ModuleLayout:
    """Random stage depths and a random split of their blocks into contiguous modules."""
    stages = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    total = sum(stages)
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=min(4, total - 1)))) if total > 1 else []
    bounds = [0, *cuts, total]
    return ModuleLayout(tuple(b - a for a, b in itertools.pairwise(bounds)), SWIN.naming, stages)


BLOCK_RESTS = ('norm1.weight', 'attn.w_msa.qkv.weight', 'attn.w_msa.relative_position_bias_table',
               'attn.w_msa.proj.weight', 'ffn.layers.0.0.weight', 'ffn.layers.1.weight')


def swin_state_dict(layout: ModuleLayout, start: int = 0) -> dict[str, torch.Tensor]:
    """A classifier state dict in mmpretrain's Swin naming for ``layout``'s stages, all values distinct."""
    keys = ['backbone.patch_embed.projection.weight', 'backbone.absolute_pos_embed']
    for stage, depth in enumerate(layout.stage_depths):
        keys += [f'backbone.stages.{stage}.blocks.{block}.{rest}' for block in range(depth) for rest in BLOCK_RESTS]
        if stage < len(layout.stage_depths) - 1:
            keys += [f'backbone.stages.{stage}.downsample.norm.weight',
                     f'backbone.stages.{stage}.downsample.reduction.weight']
    keys += [f'backbone.norm{len(layout.stage_depths) - 1}.weight', 'head.fc.weight']
    return {key: torch.full((1, ), float(start + n)) for n, key in enumerate(keys)}


# --- Layouts over stages -------------------------------------------------------------------------


@PROPERTY
@given(staged_layouts())
def test_segments_tile_the_modules_and_the_stages(layout: ModuleLayout) -> None:
    segments = layout.segments()
    assert tuple(map(sum, segments)) == layout.depths
    assert tuple(map(sum, zip(*segments))) == layout.stage_depths
    for row in segments:  # a module's blocks are contiguous: its non-empty stages are consecutive
        stages = [s for s, n in enumerate(row) if n]
        assert stages == list(range(stages[0], stages[-1] + 1))
    for block in range(layout.total_depth):
        stage, index = layout.stage_of(block)
        assert layout.global_block(stage, index) == block


@PROPERTY
@given(staged_layouts())
def test_meta_and_hybrids_reduce_each_segment_to_one_block_and_keep_the_stages(full: ModuleLayout) -> None:
    meta = full.meta()
    assert meta.segments() == tuple(tuple(min(n, 1) for n in row) for row in full.segments())
    assert len(meta.stage_depths) == len(full.stage_depths) and all(d >= 1 for d in meta.stage_depths)
    assert sorted(meta.origins(full)) == list(meta.origins(full))
    for target in range(full.num_modules):
        hybrid = full.hybrid(target)
        assert hybrid.segments()[target] == full.segments()[target]
        assert [row for m, row in enumerate(hybrid.segments()) if m != target] == \
            [row for m, row in enumerate(meta.segments()) if m != target]
        origins = hybrid.origins(full)
        assert [origins[b] for b in hybrid.blocks_of(target)] == list(full.blocks_of(target))
        # a reduced segment stands for the first block of its segment in the full model
        for block in range(hybrid.total_depth):
            module = hybrid.locate(block)[0]
            assert full.locate(origins[block])[0] == module
            assert full.stage_of(origins[block])[0] == hybrid.stage_of(block)[0]


@PROPERTY
@given(staged_layouts())
def test_between_stage_layers_belong_to_the_module_holding_their_stages_last_block(full: ModuleLayout) -> None:
    for stage in range(len(full.stage_depths) - 1):
        last = full.global_block(stage, full.stage_depths[stage] - 1)
        key = f'backbone.stages.{stage}.downsample.reduction.weight'
        assert full.module_of(key) == full.locate(last)[0]
    assert full.module_of('backbone.absolute_pos_embed') == 0
    assert full.module_of(f'backbone.norm{len(full.stage_depths) - 1}.weight') == full.num_modules - 1


@PROPERTY
@given(staged_layouts())
def test_modules_exported_from_their_hybrids_assemble_into_exactly_the_full_model(full: ModuleLayout) -> None:
    state = swin_state_dict(full)
    assembled = {}
    for target in range(full.num_modules):
        hybrid = full.hybrid(target)
        in_hybrid = convert_state_dict(state, full, hybrid, [target])
        assert set(in_hybrid) <= set(swin_state_dict(hybrid))
        # the rest of the hybrid comes from the meta model: together they are the whole hybrid
        meta_part = convert_state_dict(swin_state_dict(full.meta()), full.meta(), hybrid,
                                       [m for m in range(full.num_modules) if m != target])
        assert sorted({**in_hybrid, **meta_part}) == sorted(swin_state_dict(hybrid))
        exported = convert_state_dict(in_hybrid, hybrid, full, [target])
        assert not set(exported) & set(assembled)
        assembled.update(exported)
    assert sorted(assembled) == sorted(state)
    assert all(assembled[key] is value for key, value in state.items())


def test_swin_b_split_into_four_modules_of_six_blocks() -> None:
    full = ModuleLayout.uniform(24, 4, SWIN.naming, (2, 2, 18, 2))
    assert full.segments() == ((2, 2, 2, 0), (0, 0, 6, 0), (0, 0, 6, 0), (0, 0, 4, 2))
    assert full.meta().stage_depths == (1, 1, 4, 1) and full.meta().depths == (3, 1, 1, 2)
    assert full.hybrid(1).stage_depths == (1, 1, 9, 1)
    assert full.module_of('backbone.stages.1.downsample.reduction.weight') == 0  # stage 1 ends in module 0
    assert full.module_of('backbone.stages.2.downsample.reduction.weight') == 3


def test_layouts_of_other_backbones_or_stages_do_not_mix() -> None:
    swin = ModuleLayout((2, 2), SWIN.naming, (1, 3))
    with pytest.raises(LayoutError, match='cannot map a swin layout onto a vit layout'):
        convert_state_dict({}, swin, ModuleLayout((2, 2), VIT.naming))
    with pytest.raises(LayoutError, match=r'module 0 has 2 blocks \(per stage \[1, 1\]\) .* but 2 \(per stage '
                                          r'\[2, 0\]\)'):
        convert_state_dict({}, swin, ModuleLayout((2, 2), SWIN.naming, (2, 2)), [0])
    with pytest.raises(LayoutError, match=r'module depths \[2, 2\] add up to 4 blocks but the stage depths \[1, 2\]'):
        ModuleLayout((2, 2), SWIN.naming, (1, 2))
    with pytest.raises(KeyError, match='neither a block .*nor between stages'):
        swin.module_of('backbone.layers.0.ln1.weight')


# --- The real mmpretrain backbones ---------------------------------------------------------------


def demo_cfg() -> Config:
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = 'unused'
    return cfg


@pytest.mark.parametrize('config', ['incubate_demo_fashion_mnist.py', 'incubate_demo_fashion_mnist_swin.py',
                                    'incubate_swin_b.py', 'incubate_vit_b.py'])
def test_every_parameter_is_where_the_backbones_own_get_layer_depth_puts_it(config: str) -> None:
    """Our naming against mmpretrain's ``get_layer_depth`` (stem 0, block b at b + 1, a between-stage layer with
    its stage's last block, the rest last), except the stem parameters it files with the head."""
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    layout = build_layout(cfg)
    backbone = build_on_meta(cfg).backbone
    for name, _ in backbone.named_parameters():
        key = f'backbone.{name}'
        depth, num_depths = backbone.get_layer_depth(key, prefix='backbone.')
        block = layout.block_of(key)
        stage = layout.naming.between_stage(key)
        if block is not None:
            assert depth == block + 1, key
        elif stage is not None:
            assert depth == sum(layout.stage_depths[:stage + 1]), key
        elif layout.module_of(key) == 0 and layout.naming.outer_part(key) == 'stem':
            assert depth == 0 or key.endswith(('absolute_pos_embed', 'dist_token')), key
        else:
            assert depth == num_depths - 1, key


def test_hybrid_blocks_keep_the_window_shift_of_the_block_they_stand_for() -> None:
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_swin_b.py'))
    backbone = phase_recipe(cfg, 'incubate', 1).model.backbone
    shifts = [[block['shift'] for block in stage['block_cfgs']] for stage in backbone.stage_cfgs]
    # stage 2 of the hybrid: module 0's block (full block 0), module 1's six (full 2-7), modules 2 and 3 (full 8, 14)
    assert shifts == [[False], [False], [False, False, True, False, True, False, True, False, False], [False]]
    built = build_on_meta(phase_recipe(cfg, 'incubate', 1)).backbone
    assert [[blk.attn.shift_size > 0 for blk in stage.blocks] for stage in built.stages] == shifts
    # the full model is stock Swin-B: no per-block settings
    assert 'stage_cfgs' not in phase_recipe(cfg, 'finetune').model.backbone


def test_grown_swin_modules_compute_the_meta_model_in_their_hybrids_and_assembled(tmp_path) -> None:
    cfg = demo_cfg()
    assert grown_logits_equal_meta(cfg, tmp_path) == [True, True, True]
    # The check can fail: blocks shifted as their position in the smaller network says, not as the full
    # model's block they stand for, compute something else.
    assert grown_logits_equal_meta(cfg, tmp_path, keep_shifts=False) != [True, True, True]


def test_a_shift_the_config_sets_for_every_block_is_kept_in_meta_models_and_hybrids() -> None:
    cfg = demo_cfg()
    cfg.model.backbone.stage_cfgs = dict(block_cfgs=dict(shift=False))
    for phase, module in [('meta', None), ('incubate', 0), ('incubate', 1)]:
        built = build_on_meta(phase_recipe(cfg, phase, module)).backbone
        assert not any(block.attn.shift_size for stage in built.stages for block in stage.blocks)


def test_a_swin_meta_model_of_another_layout_is_refused(tmp_path) -> None:
    """Same K and stage depths, other module split: its blocks stand for other places (other shifts)."""
    cfg = demo_cfg()
    layout = build_layout(cfg)
    meta = MODELS.build(phase_recipe(cfg, 'meta').model)
    other = ModuleLayout((3, 5), SWIN.naming, layout.stage_depths)
    assert other.meta().stage_depths == layout.meta().stage_depths  # the same shapes: keys alone cannot tell
    save_atomic(dict(meta={META_KEY: dict(phase='meta', holds='meta', **other.tag())}, state_dict=meta.state_dict()),
                tmp_path / 'meta.pth')
    hybrid = MODELS.build(dict(phase_recipe(cfg, 'incubate', 0).model, meta_checkpoint=str(tmp_path / 'meta.pth')))
    with pytest.raises(CheckpointError, match=r'meta.pth was trained for layout \(3, 5\) \(stages \(2, 4, 2\)\), '
                                              r'the config asks for \(4, 4\)'):
        hybrid.init_weights()


@pytest.mark.parametrize('config', ['incubate_swin_b.py', 'incubate_swin_b_deit3.py'])
def test_swin_b_pipelines_build_every_phase_at_full_size(config: str) -> None:
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    layout = build_layout(cfg)
    assert layout.depths == (6, 6, 6, 6) and layout.stage_depths == (2, 2, 18, 2)
    full = full_model_shapes(phase_recipe(cfg, 'finetune'))
    assert sum(v.numel() for v in full.values() if v.dtype.is_floating_point) == pytest.approx(87.8e6, rel=0.01)
    for phase, module in [('meta', None), *[('incubate', k) for k in range(4)], ('e2e', None)]:
        shapes = full_model_shapes(phase_recipe(cfg, phase, module))
        assert sum(k.endswith('.norm1.weight') for k in shapes) == \
            (layout.meta() if phase == 'meta' else layout.hybrid(module) if module is not None else layout).total_depth


# --- The whole pipeline on the CPU ----------------------------------------------------------------


@pytest.fixture(scope='module')
def swin_pipeline(tmp_path_factory, data_root) -> tuple[Config, Path]:
    work_dir = tmp_path_factory.mktemp('swin')
    return run_tiny_pipeline(DEMO, data_root, work_dir, phases=('meta', 'incubate', 'assemble', 'finetune', 'e2e')), \
        work_dir


@needs_data
def test_swin_pipeline_assembles_a_stock_swin_classifier(swin_pipeline) -> None:
    cfg, work_dir = swin_pipeline
    stock = copy.deepcopy(cfg.model)
    assert stock.backbone.type == 'SwinTransformer' and 'stage_cfgs' not in stock.backbone
    assembled = MODELS.build(stock).eval()
    checkpoint = torch.load(work_dir / 'assembled.pth', weights_only=True)
    assembled.load_state_dict(checkpoint['state_dict'], strict=True)
    assert checkpoint['meta'][META_KEY]['backbone'] == 'swin'
    # By hand: each module file holds its own keys, as in the full model; load them one after another.
    by_hand = MODELS.build(stock).eval()
    loaded = set()
    for module in range(2):
        state = torch.load(work_dir / f'incubate/module_{module}/module_{module}.pth', weights_only=True)['state_dict']
        assert any(k.startswith('backbone.stages.1.blocks.') for k in state)  # both modules hold stage-1 blocks
        by_hand.load_state_dict(state, strict=False)
        loaded |= set(state)
    assert loaded == set(by_hand.state_dict())
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(assembled(images, mode='tensor'), by_hand(images, mode='tensor'))
    # Incubated module 0 owns the patch merging after stage 0; module 1 the one after stage 1 and the head.
    module_0 = torch.load(work_dir / 'incubate/module_0/module_0.pth', weights_only=True)['state_dict']
    assert 'backbone.stages.0.downsample.reduction.weight' in module_0
    assert 'backbone.stages.1.downsample.reduction.weight' not in module_0


@needs_data
def test_swin_pipeline_learns_and_its_product_is_evaluated_in_a_fresh_process(swin_pipeline, tmp_path) -> None:
    cfg, work_dir = swin_pipeline
    records = {(r['phase'], r['module']): r for r in load_records(work_dir)}
    assert records['meta', None]['num_blocks'] == 4 and records['incubate', 1]['num_blocks'] == 6
    top1 = records['finetune', None]['test_metrics']['accuracy/top1']
    assert top1 > 15  # 10 classes: chance is 10 %
    output = scored_in_fresh_process(cfg, work_dir / 'finetune/finetuned.pth', tmp_path, ROOT)
    assert f'accuracy/top1: {top1:.4f}' in output


@needs_data
def test_a_swin_module_is_refused_by_a_vit_assembly_naming_both(swin_pipeline, tmp_path) -> None:
    from tools.assemble import main as assemble_cli
    _, work_dir = swin_pipeline
    vit_config = ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'
    modules = [str(work_dir / f'incubate/module_{k}/module_{k}.pth') for k in range(2)]
    with pytest.raises(SystemExit, match=r'module_0\.pth was incubated for a swin backbone, layout \(4, 4\) in stages '
                                         r'\(2, 4, 2\), the config asks for a vit backbone'):
        assemble_cli([str(vit_config), '--modules', *modules, '--out', str(tmp_path / 'out.pth'),
                      '--cfg-options', 'incubation.num_modules=2'])
    assert not (tmp_path / 'out.pth').exists()


def test_the_official_converter_refuses_a_swin_config(tmp_path) -> None:
    from tools.convert_official import main as convert_cli
    src = tmp_path / 'official.pth'
    torch.save(dict(model={}), src)
    with pytest.raises(SystemExit, match='the official Deep Incubation code has no Swin'):
        convert_cli([str(src), str(tmp_path / 'out.pth'), '--config', str(DEMO)])
    assert not (tmp_path / 'out.pth').exists()


def test_vit_output_blocks_of_the_full_model_are_not_silently_other_blocks_of_a_phase_network() -> None:
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'))
    cfg.model.backbone.out_indices = [1, -1]  # a list: mmpretrain turns negative indices positive in place
    assert list(build_on_meta(phase_recipe(cfg, 'finetune')).backbone.out_indices) == [1, 7]
    # block 1 of the 8-block model is not block 1 of the 4-block meta model or of a 5-block hybrid
    for phase, module, blocks in (('meta', None, 4), ('incubate', 2, 5)):
        with pytest.raises(LayoutError, match=rf'model.backbone.out_indices \[1, -1\] name blocks \[1\] of the full '
                                              rf'model \(8 blocks\); in a network of {blocks} blocks'):
            phase_recipe(cfg, phase, module)
    cfg.model.backbone.out_indices = -1  # the last block: the same in every phase
    assert phase_recipe(cfg, 'meta').model.backbone.out_indices == -1
    # set for the phase itself, they count its network's blocks; beyond its depth, they are named
    cfg.incubation.meta.model = dict(backbone=dict(out_indices=(1, 3)))
    assert list(build_on_meta(phase_recipe(cfg, 'meta')).backbone.out_indices) == [1, 3]
    cfg.incubation.meta.model = dict(backbone=dict(out_indices=(3, 7)))
    with pytest.raises(LayoutError, match=r'model.backbone.out_indices \[3, 7\] name blocks \[7\] that a network of '
                                          r'4 blocks \(layout \(1, 1, 1, 1\)\) does not have'):
        phase_recipe(cfg, 'meta')


def test_unsupported_backbones_are_named() -> None:
    with pytest.raises(LayoutError, match=r"model.backbone.type='ResNet' \(mmpretrain.models.backbones.resnet.ResNet\) "
                                          r"has no backbone spec; Deep Incubation serves exactly \["):
        spec_of(dict(type='ResNet', depth=50))


# --- Downstream ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('config', ['mask-rcnn_swin-b-incubated_fpn_1x_coco.py',
                                    'upernet_swin-b-incubated_8xb2-160k_ade20k-512x512.py'])
def test_downstream_swin_b_configs_take_every_tensor_of_the_incubated_swin_b(config: str, tmp_path) -> None:
    """At full size on the meta device: every backbone tensor of the fine-tuned Swin-B fits mmdet's / mmseg's
    Swin-B; only the output norms of stages 0-2, which a classifier lacks, are the detector's own."""
    pipeline = Config.fromfile(str(ROOT / 'configs' / 'incubate_swin_b.py'))
    classifier = build_on_meta(phase_recipe(pipeline, 'finetune')).state_dict()
    tag = dict(phase='finetune', holds='full', **build_layout(pipeline).tag())
    torch.save(dict(meta={META_KEY: tag}, state_dict=classifier), tmp_path / 'swin-b.pth')  # meta tensors: no data
    cfg = Config.fromfile(str(ROOT / 'configs' / 'downstream' / config))
    cfg.checkpoint = str(tmp_path / 'swin-b.pth')
    cfg = resolve_settings(cfg)
    check_pretrained_backbone(cfg)
    backbone = build_on_meta(cfg).backbone.state_dict()
    ours = {key[len('backbone.'):]: value for key, value in classifier.items() if key.startswith('backbone.')}
    assert set(ours) <= set(backbone)
    assert sorted(set(backbone) - set(ours)) == [f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')]
    assert all(backbone[key].shape == value.shape for key, value in ours.items())
    # a ViT-B checkpoint is refused before anything is built
    vit = Config.fromfile(str(ROOT / 'configs' / 'incubate_vit_b.py'))
    torch.save(dict(state_dict=build_on_meta(phase_recipe(vit, 'finetune')).state_dict()), tmp_path / 'vit-b.pth')
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'vit-b.pth')
    with pytest.raises(CheckpointError, match=r'vit-b\.pth \(keys backbone\.\*\) does not fit the model: missing keys'):
        check_pretrained_backbone(cfg)


def test_a_subclass_is_not_served_by_its_parents_spec() -> None:
    """Specs are looked up by exact class: a subclass may name or compute its blocks otherwise."""
    from mmpretrain.models import VisionTransformer

    from mmincubation.registry import MODELS as OURS

    @OURS.register_module(name='_TestSubclassViT', force=True)
    class _TestSubclassViT(VisionTransformer):
        pass

    assert spec_of(dict(type='mmpretrain.VisionTransformer')) is VIT
    assert spec_of(dict(type='mmincubation.InflatingVisionTransformer')) is VIT
    with pytest.raises(LayoutError, match=r"model.backbone.type='mmincubation._TestSubclassViT' \(.*_TestSubclassViT\) "
                                          r"has no backbone spec.*A subclass is not served by its parent's spec: add "
                                          r"its registry name to that spec's classes \(mmincubation/backbones/"):
        spec_of(dict(type='mmincubation._TestSubclassViT'))


@needs_data
def test_swin_products_are_those_of_the_code_before_backbone_specs(swin_pipeline) -> None:
    """Backbone specs (one file per backbone, exact-class lookup, layers before a stage) must not change Swin.

    ``data/swin_tiny_pipeline_products.json`` holds, per product of this fixture's pipeline as the code before
    the specs wrote it, every key with its shape, sum and absolute sum (float64); as the ViT twin in
    test_fresh_process.py, sums may differ only by floating-point noise across CPUs.
    """
    _, work_dir = swin_pipeline
    stored = json.loads((Path(__file__).parent / 'data' / 'swin_tiny_pipeline_products.json').read_text())
    assert len(stored) == 6
    for product, tensors in stored.items():
        state = torch.load(work_dir / product, weights_only=True)['state_dict']
        assert list(state) == list(tensors), product
        for key, (shape, total, absolute) in tensors.items():
            value = state[key].double()
            assert list(value.shape) == shape, (product, key)
            assert float(value.sum()) == pytest.approx(total, rel=1e-4, abs=1e-4), (product, key)
            assert float(value.abs().sum()) == pytest.approx(absolute, rel=1e-4, abs=1e-4), (product, key)
