"""ConvNeXt (mmpretrain ``ConvNeXt``: downsampling before each stage, layer scale, per-stage widths) incubated
end to end through its own spec."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from backbone_checks import check_stock_product, grown_logits_equal_meta, run_tiny_pipeline
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.backbones import CONVNEXT, spec_of
from mmincubation.checkpoint import META_KEY, CheckpointError, save_atomic
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.fit_checks import check_pretrained_backbone
from mmincubation.layout import BlockNaming, LayoutError
from mmincubation.make_meta import make_meta

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'incubate_demo_fashion_mnist_convnext.py'
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


def demo_cfg() -> Config:
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = 'unused'
    return cfg


def test_downsampling_goes_with_the_module_holding_the_first_block_of_its_stage() -> None:
    cfg = demo_cfg()
    assert spec_of(cfg.model.backbone) is CONVNEXT
    layout = build_layout(cfg)
    assert layout.stage_depths == (2, 4, 2) and layout.meta().stage_depths == (1, 2, 1)
    assert [layout.module_of(f'backbone.downsample_layers.{s}.0.weight') for s in range(3)] == [0, 0, 1]
    full = MODELS.build(phase_recipe(cfg, 'finetune').model)
    for key in full.state_dict():  # every tensor belongs to exactly one module
        layout.module_of(key)
    # per-stage widths: each meta model / hybrid stage has the full model's width there
    for phase, module in [('meta', None), ('incubate', 0), ('incubate', 1)]:
        built = MODELS.build(phase_recipe(cfg, phase, module).model)
        assert [stage[0].depthwise_conv.in_channels for stage in built.backbone.stages] == [32, 64, 128]


def test_grown_convnext_modules_compute_the_meta_model_in_their_hybrids_and_assembled(tmp_path, monkeypatch) -> None:
    cfg = demo_cfg()
    assert grown_logits_equal_meta(cfg, tmp_path) == [True] * 3
    # without layer scale too (its 1e-6 makes any new block nearly the identity, the test below could not fail)
    cfg.model.backbone.layer_scale_init_value = 0.
    assert grown_logits_equal_meta(cfg, tmp_path) == [True] * 3
    # The check can fail: zeroing a bias alone (zero already) leaves each new block a real block.
    naming = CONVNEXT.naming
    monkeypatch.setattr(CONVNEXT, 'naming', BlockNaming(
        name=naming.name, block_key=naming.block_key, before_key=naming.before_key, stem_prefixes=naming.stem_prefixes,
        tail_prefixes=naming.tail_prefixes, residual_outputs=('depthwise_conv.bias', )))
    assert grown_logits_equal_meta(cfg, tmp_path) != [True] * 3


def test_named_archs_are_read_from_arch_settings_and_negative_outputs_of_other_stage_counts_refused() -> None:
    cfg = demo_cfg()
    cfg.model.backbone.arch = 'base'
    cfg.incubation.update(module_depths=None, num_modules=4)
    assert build_layout(cfg).stage_depths == (3, 3, 27, 3)
    assert build_layout(cfg).meta().stage_depths == (1, 1, 4, 1)  # modules of 9: 3+3+3 | 9 | 9 | 6+3
    cfg = demo_cfg()
    cfg.model.backbone.out_indices = -1
    with pytest.raises(LayoutError, match='counts negative indices from 4 stages, this one has 3'):
        phase_recipe(cfg, 'meta')


def test_make_meta_from_a_pretrained_convnext_takes_blocks_of_each_stage(tmp_path) -> None:
    cfg = demo_cfg()
    source_cfg = copy.deepcopy(phase_recipe(cfg, 'finetune').model)
    source_cfg.backbone.arch = dict(depths=[3, 5, 3], channels=[32, 64, 128])
    torch.manual_seed(3)
    source = MODELS.build(source_cfg).eval()
    with torch.no_grad():
        for param in source.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    path = save_atomic(dict(state_dict=source.state_dict()), tmp_path / 'convnext.pth')
    checkpoint = make_meta(path, cfg)
    # meta stages (1, 2, 1) from source stages (3, 5, 3): evenly spaced in each, first and last of a stage kept
    picked = {(0, 0): (0, 0), (1, 0): (1, 0), (1, 1): (1, 4), (2, 0): (2, 0)}
    state, wanted = checkpoint['state_dict'], source.state_dict()
    assert set(state) == set(MODELS.build(phase_recipe(cfg, 'meta').model).state_dict())
    for key, value in state.items():
        split = CONVNEXT.naming.split(key)
        origin = key if split is None else CONVNEXT.naming.join(*picked[split.stage, split.index], split.rest)
        assert torch.equal(value, wanted[origin]), key
    assert checkpoint['meta'][META_KEY]['pretrained']['blocks'] == [0, 3, 7, 8]
    with pytest.raises(LayoutError, match=r'must give each stage as many blocks as the meta model has there: '
                                          r'\[1, 2, 1\]'):
        make_meta(path, cfg, blocks=[0, 1, 7, 8])


def test_a_convnext_of_another_stem_or_width_is_refused_naming_convnexts_settings(tmp_path) -> None:
    """make_meta and the downstream fit check name ConvNeXt's own settings, not a ViT's (``arch.embed_dims``,
    ``patch_size``: ConvNeXt has neither)."""
    cfg = demo_cfg()
    for change, named in ((dict(stem_patch_size=4), 'stem_patch_size'),
                          (dict(arch=dict(depths=[2, 4, 2], channels=[48, 64, 128])), 'arch.channels[0]')):
        source_cfg = copy.deepcopy(cfg.model)
        source_cfg.backbone.update(change)
        path = save_atomic(dict(state_dict=MODELS.build(source_cfg).state_dict()), tmp_path / f'{named}.pth')
        with pytest.raises(CheckpointError, match=re.escape(f'(model.backbone.{named})')):
            make_meta(path, cfg)
    # downstream: only the stem's patch differs (the fit check leaves the patch embedding's shape to this test)
    downstream = Config(dict(model=copy.deepcopy(cfg.model)))
    downstream.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'stem_patch_size.pth'),
                                              prefix='backbone.')
    with pytest.raises(CheckpointError, match=re.escape('(model.backbone.arch.channels[0], '
                                                        'model.backbone.stem_patch_size)')):
        check_pretrained_backbone(downstream)


@pytest.fixture(scope='module')
def convnext_pipeline(tmp_path_factory, data_root) -> tuple[Config, Path]:
    work_dir = tmp_path_factory.mktemp('convnext')
    return run_tiny_pipeline(DEMO, data_root, work_dir), work_dir


@needs_data
def test_convnext_assembly_is_a_stock_convnext_classifier_scored_as_recorded(convnext_pipeline, tmp_path) -> None:
    cfg, work_dir = convnext_pipeline
    records = check_stock_product(cfg, work_dir, 'ConvNeXt', 'convnext', tmp_path, ROOT)
    module_1 = torch.load(work_dir / 'incubate/module_1/module_1.pth', weights_only=True)['state_dict']
    assert 'backbone.downsample_layers.2.1.weight' in module_1
    assert 'backbone.downsample_layers.1.1.weight' not in module_1
    assert records['meta', None]['num_blocks'] == 4 and records['incubate', 0]['num_blocks'] == 6
