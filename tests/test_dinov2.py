"""DINOv2-style ViTs (layer scale, SwiGLU FFN) go through the ViT spec: grown modules exact, dinov2-g splits."""
from __future__ import annotations

from pathlib import Path

import pytest
from backbone_checks import grown_logits_equal_meta
from mmengine.config import Config

from mmincubation.backbones import VIT, spec_of
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.fit_checks import full_model_shapes
from mmincubation.layout import BlockNaming, LayoutError

ROOT = Path(__file__).resolve().parents[1]


def dinov2_style_demo(ffn_type: str) -> Config:
    """The demo's 8-block ViT with DINOv2's layer scale (1.0 here, so that a block that is not the identity
    shows in the logits: DINOv2's own 1e-5 would hide it) and FFN type."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'))
    cfg.work_dir = 'unused'
    cfg.model.backbone.update(type='VisionTransformer', layer_scale_init_value=1.0,
                              layer_cfgs=dict(ffn_type=ffn_type))
    return cfg


@pytest.mark.parametrize('ffn_type', ['origin', 'swiglu_fused'])
def test_grown_modules_with_layer_scale_compute_the_meta_model(ffn_type: str, tmp_path) -> None:
    cfg = dinov2_style_demo(ffn_type)
    assert spec_of(cfg.model.backbone) is VIT
    assert grown_logits_equal_meta(cfg, tmp_path) == [True] * 5


def test_a_swiglu_ffn_the_spec_does_not_know_is_refused_not_grown_wrong(tmp_path, monkeypatch) -> None:
    naming = VIT.naming
    monkeypatch.setattr(VIT, 'naming', BlockNaming(
        name=naming.name, block_key=naming.block_key, stem_prefixes=naming.stem_prefixes,
        tail_prefixes=naming.tail_prefixes, residual_outputs=('attn.proj.', 'ffn.layers.1.')))
    with pytest.raises(LayoutError, match=r'its hybrid has no backbone.layers.1.ffn.layers.1.\* tensors'):
        grown_logits_equal_meta(dinov2_style_demo('swiglu_fused'), tmp_path)


def test_dinov2_g_splits_into_four_modules_at_full_size() -> None:
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_vit_b.py'))
    cfg.work_dir = 'unused'
    cfg.model.backbone.update(arch='dinov2-g', img_size=518, patch_size=14, layer_scale_init_value=1e-5,
                              layer_cfgs=dict(ffn_type='swiglu_fused'))
    cfg.model.head.in_channels = 1536
    assert build_layout(cfg).depths == (10, 10, 10, 10)
    full = full_model_shapes(phase_recipe(cfg, 'finetune'))
    backbone = sum(v.numel() for k, v in full.items() if k.startswith('backbone.') and v.dtype.is_floating_point)
    assert backbone == pytest.approx(1.136e9, rel=0.01)  # mmpretrain's dinov2 metafile: 1,136,000,000
    assert any(k.endswith('.ffn.w3.weight') for k in full) and any(k.endswith('.attn.gamma1.weight') for k in full)
    for phase, module, blocks in [('meta', None, 4), ('incubate', 1, 13)]:
        shapes = full_model_shapes(phase_recipe(cfg, phase, module))
        assert sum(k.endswith('.ln1.weight') and 'layers' in k for k in shapes) == blocks
