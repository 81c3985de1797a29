"""EVA-02 (mmpretrain ``ViTEVA02``: RoPE, SwiGLU with sub-LN) incubated end to end through its own spec."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from backbone_checks import check_stock_product, grown_logits_equal_meta, run_tiny_pipeline
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.backbones import EVA02, VIT, spec_of
from mmincubation.checkpoint import META_KEY, save_atomic
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.layout import BlockNaming, LayoutError
from mmincubation.make_meta import make_meta

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'incubate_demo_fashion_mnist_eva02.py'
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


def demo_cfg() -> Config:
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = 'unused'
    return cfg


def test_eva02_has_its_own_spec_not_the_vits() -> None:
    backbone = demo_cfg().model.backbone
    assert spec_of(backbone) is EVA02
    assert build_layout(demo_cfg()).naming.name == 'eva02'
    # every tensor of the model (the RoPE tables too) belongs to exactly one module
    layout = build_layout(demo_cfg())
    full = MODELS.build(phase_recipe(demo_cfg(), 'finetune').model)
    owners = {key: layout.module_of(key) for key in full.state_dict()}
    assert owners['backbone.rope.freqs_cos'] == 0 and owners['backbone.layers.7.mlp.w3.weight'] == 3
    # the ViT's naming fails on EVA-02's RoPE tables: the reason it has a spec of its own
    with pytest.raises(KeyError, match='backbone.rope.freqs_cos'):
        VIT.naming.outer_part('backbone.rope.freqs_cos')


def test_grown_eva02_modules_compute_the_meta_model_in_their_hybrids_and_assembled(tmp_path, monkeypatch) -> None:
    cfg = demo_cfg()
    assert grown_logits_equal_meta(cfg, tmp_path) == [True] * 5
    # With the ViT's residual outputs (ffn.layers.1 / ffn.w3, not EVA-02's mlp.w3) its new blocks could not be
    # made the identity: refused, naming the missing layers, rather than grown wrong.
    monkeypatch.setattr(EVA02, 'naming', BlockNaming(
        name=EVA02.naming.name, block_key=EVA02.naming.block_key, stem_prefixes=EVA02.naming.stem_prefixes,
        tail_prefixes=EVA02.naming.tail_prefixes, residual_outputs=VIT.naming.residual_outputs))
    with pytest.raises(LayoutError, match=r'module 0 grown from the meta model: its hybrid has no '
                                          r'backbone.layers.1.ffn.layers.1. or backbone.layers.1.ffn.w3.\* tensors'):
        grown_logits_equal_meta(cfg, tmp_path)


def test_eva02_b_and_l_configs_split_as_their_arch_zoo_says() -> None:
    for arch, blocks in (('b', 12), ('l', 24)):
        cfg = demo_cfg()
        cfg.model.backbone.arch = arch
        assert sum(build_layout(cfg).stage_depths) == blocks
        assert phase_recipe(cfg, 'meta').model.backbone.arch['num_layers'] == 4


def test_make_meta_from_a_pretrained_eva02_keeps_the_chosen_blocks(tmp_path) -> None:
    cfg = demo_cfg()
    source_cfg = copy.deepcopy(phase_recipe(cfg, 'finetune').model)
    torch.manual_seed(3)
    source = MODELS.build(source_cfg).eval()
    with torch.no_grad():
        for param in source.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    path = save_atomic(dict(meta={META_KEY: dict(phase='e2e', layout=[2, 2, 2, 2], backbone='eva02', stages=[8],
                                                 holds='full')}, state_dict=source.state_dict()), tmp_path / 'e2e.pth')
    checkpoint = make_meta(path, cfg, blocks=[0, 3, 5, 7])
    state, wanted = checkpoint['state_dict'], source.state_dict()
    for key, value in state.items():
        if key.startswith('backbone.layers.'):
            k, rest = key[len('backbone.layers.'):].split('.', 1)
            key = f'backbone.layers.{[0, 3, 5, 7][int(k)]}.{rest}'
        assert torch.equal(value, wanted[key]), key
    assert checkpoint['meta'][META_KEY]['backbone'] == 'eva02'


@pytest.fixture(scope='module')
def eva02_pipeline(tmp_path_factory, data_root) -> tuple[Config, Path]:
    work_dir = tmp_path_factory.mktemp('eva02')
    return run_tiny_pipeline(DEMO, data_root, work_dir), work_dir


@needs_data
def test_eva02_assembly_is_a_stock_vit_eva02_classifier_scored_as_recorded(eva02_pipeline, tmp_path) -> None:
    cfg, work_dir = eva02_pipeline
    records = check_stock_product(cfg, work_dir, 'ViTEVA02', 'eva02', tmp_path, ROOT)
    assert records['meta', None]['num_blocks'] == 4 and records['incubate', 1]['num_blocks'] == 5
