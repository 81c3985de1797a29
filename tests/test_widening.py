"""Width growth: a narrower pretrained ViT widened function-preservingly into the meta model (Net2WiderNet-style)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.backbones.widening import widen_vit
from mmincubation.checkpoint import META_KEY, save_atomic
from mmincubation.engine.runner import phase_recipe
from mmincubation.engine.runner.fit_checks import build_on_meta
from mmincubation.layout import LayoutError, check_state_dict
from mmincubation.make_meta import make_meta

ROOT = Path(__file__).resolve().parents[1]


def vit(width: int, heads: int, depth: int = 3, **backbone) -> dict:
    return dict(type='ImageClassifier',
                backbone=dict(type='VisionTransformer', arch=dict(embed_dims=width, num_layers=depth, num_heads=heads,
                                                                  feedforward_channels=4 * width),
                              img_size=28, patch_size=4, in_channels=1, out_type='cls_token', **backbone),
                neck=None, head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=width))


def random_model(cfg: dict) -> torch.nn.Module:
    """Every tensor random (LayerNorm scales around 1), so that each place shows in the logits."""
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if name.endswith(('ln1.weight', 'ln2.weight')) else 0.))
    return model


@pytest.mark.parametrize('factor, backbone', [(2, {}), (3, {}), (2, dict(layer_scale_init_value=0.5))])
def test_the_widened_network_computes_the_source_logits(factor: int, backbone: dict) -> None:
    source = random_model(vit(32, 1, **backbone))
    wide = MODELS.build(vit(32 * factor, factor, **backbone)).eval()
    wide.load_state_dict(widen_vit(source.state_dict(), factor), strict=True)
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, found = source(images, mode='tensor'), wide(images, mode='tensor')
    # float32 sums over factor x more terms: a few 1e-6 relative (tested tolerance 1e-5 of the logits' scale)
    assert torch.allclose(found, expected, atol=1e-5 * expected.abs().max().item())
    assert not torch.allclose(found, torch.zeros_like(found))


def test_what_cannot_be_widened_exactly_is_refused() -> None:
    state = random_model(vit(32, 1, layer_cfgs=dict(ffn_type='swiglu_fused'))).state_dict()
    with pytest.raises(LayoutError, match=r'backbone.layers.0.ffn.w12.weight \(shape \(176, 32\)\) has no role in '
                                          r'widening a ViT'):
        widen_vit(state, 2)
    with pytest.raises(LayoutError, match='a whole factor of at least 2, got 1.5'):
        widen_vit(state, 1.5)


def test_make_meta_widens_a_narrower_pretrained_vit(tmp_path) -> None:
    """A width-32 network into the demo's width-64 meta model (2 heads: the source's 1, duplicated)."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'))
    cfg.work_dir = str(tmp_path)
    source = random_model(vit(32, 1, depth=8))
    path = save_atomic(dict(meta={META_KEY: dict(phase='e2e', layout=[2, 2, 2, 2], holds='full')},
                            state_dict=source.state_dict()), tmp_path / 'narrow.pth')
    checkpoint = make_meta(path, cfg, blocks=[0, 2, 5, 7])
    assert checkpoint['meta'][META_KEY]['pretrained']['widened'] == 2
    meta = MODELS.build(phase_recipe(cfg, 'meta').model).eval()
    meta.load_state_dict(checkpoint['state_dict'], strict=True)
    kept = copy.deepcopy(source)  # the source with only the chosen blocks: what the meta model must compute
    kept.backbone.layers = torch.nn.ModuleList([source.backbone.layers[b] for b in (0, 2, 5, 7)])
    kept.backbone.out_indices = [3]
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = kept(images, mode='tensor')
        assert torch.allclose(meta(images, mode='tensor'), expected, atol=1e-5 * expected.abs().max().item())


def test_a_vit_s_grows_a_vit_b_width_meta_model_at_full_size() -> None:
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_vit_b.py'))
    cfg.work_dir = 'unused'
    vit_b_meta = phase_recipe(cfg, 'meta')
    vit_s_meta = copy.deepcopy(vit_b_meta)
    vit_s_meta.model.backbone.arch = dict(vit_b_meta.model.backbone.arch, embed_dims=384, num_heads=6,
                                          feedforward_channels=1536)
    vit_s_meta.model.head.in_channels = 384
    widened = widen_vit(build_on_meta(vit_s_meta).state_dict(), 2)
    check_state_dict(widened, build_on_meta(vit_b_meta).state_dict(), source='ViT-S meta model widened')


def test_exact_widening_keeps_its_copies_equal_under_training() -> None:
    """What is not gained (docs/benchmarks.md, width growth): each copy of a widened unit gets the same gradient, so
    five AdamW steps leave the tiled residual stream's copies identical; the widened network stays the source's
    width in effect until new random weights break the symmetry."""
    from mmpretrain.structures import DataSample
    wide = MODELS.build(vit(64, 2))
    wide.load_state_dict(widen_vit(random_model(vit(32, 1)).state_dict(), 2), strict=True)
    wide.train()
    before = wide.backbone.layers[0].ffn.layers[0][0].weight.detach().clone()
    optimizer = torch.optim.AdamW(wide.parameters(), lr=1e-3, weight_decay=0.05)
    samples = [DataSample().set_gt_label(i) for i in range(8)]
    for _ in range(5):
        loss = sum(wide(torch.randn(8, 1, 28, 28), samples, mode='loss').values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fc1, ln1 = wide.backbone.layers[0].ffn.layers[0][0].weight, wide.backbone.layers[0].ln1.weight
    assert not torch.equal(fc1, before)  # it trained
    assert torch.equal(fc1[:, :32], fc1[:, 32:]) and torch.equal(ln1[:32], ln1[32:])
