"""The growth peers of Deep Incubation as pipeline methods: ``stack`` (G_stack) and ``grow`` (every module
grown at once), sharing the meta model, with their phase rows, products, records and costs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from backbone_checks import TINY
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.checkpoint import META_KEY, save_atomic
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.records import load_records, method_results
from mmincubation.layout import LayoutError
from mmincubation.phases import DEFAULT_METHODS, METHODS, phases_of

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


def load(name: str) -> Config:
    cfg = Config.fromfile(str(CONFIGS / name))
    cfg.work_dir = 'unused'
    return cfg


def meta_product(cfg: Config, path: Path) -> torch.nn.Module:
    """A random meta model of ``cfg`` saved as the meta phase's product."""
    torch.manual_seed(0)
    meta = MODELS.build(phase_recipe(cfg, 'meta').model).eval()
    meta.init_weights()
    with torch.no_grad():  # biases and norms away from their init, so that every tensor's place shows
        for param in meta.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    save_atomic(dict(meta={META_KEY: dict(phase='meta', holds='meta', **build_layout(cfg).tag())},
                     state_dict=meta.state_dict()), path)
    return meta


def grown(cfg: Config, growth: str, meta_path: Path) -> torch.nn.Module:
    model = MODELS.build(dict(phase_recipe(cfg, growth).model, meta_checkpoint=str(meta_path))).eval()
    model.init_weights()
    return model


def test_the_peers_run_only_when_a_config_names_them() -> None:
    assert phases_of(DEFAULT_METHODS) == ('meta', 'incubate', 'assemble', 'finetune', 'e2e')
    assert phases_of(['stack', 'grow']) == ('meta', 'stack', 'grow')
    assert set(METHODS) == {'incubation', 'e2e', 'stack', 'grow'}
    with pytest.raises(ValueError, match=r"incubation.methods: unknown methods \['g_stack'\]"):
        phases_of(['g_stack'])


@pytest.mark.parametrize('config', ['incubate_demo_fashion_mnist.py', 'incubate_demo_fashion_mnist_swin.py',
                                    'incubate_demo_fashion_mnist_eva02.py',
                                    'incubate_demo_fashion_mnist_convnext.py'])
def test_grow_computes_the_meta_model_exactly(config: str, tmp_path) -> None:
    cfg = load(config)
    meta = meta_product(cfg, tmp_path / 'meta.pth')
    model = grown(cfg, 'grow', tmp_path / 'meta.pth')
    assert type(model.backbone) is type(meta.backbone)  # the stock backbone class, at full depth
    channels = cfg.model.backbone.get('in_channels', 3)
    images = torch.randn(4, channels, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(images, mode='tensor'), meta(images, mode='tensor'), atol=1e-5)


def test_stack_repeats_the_meta_blocks_in_order_with_the_meta_stem_and_tail(tmp_path) -> None:
    cfg = load('incubate_demo_fashion_mnist.py')  # 8 blocks, K = 4
    meta = meta_product(cfg, tmp_path / 'meta.pth').state_dict()
    state = grown(cfg, 'stack', tmp_path / 'meta.pth').state_dict()
    for key, value in state.items():
        if key.startswith('backbone.layers.'):
            index, rest = key[len('backbone.layers.'):].split('.', 1)
            origin = f'backbone.layers.{int(index) % 4}.{rest}'
        else:
            origin = key
        assert torch.equal(value, meta[origin]), key


@pytest.mark.parametrize('config, message', [
    ('incubate_demo_fashion_mnist_swin.py', 'a swin block depends on its place'),
    ('incubate_demo_fashion_mnist_convnext.py', r'stacking repeats the meta model\'s blocks in one stage; a convnext '
                                                r'backbone has stages \[2, 4, 2\]: use the grow method'),
])
def test_stack_refuses_what_it_cannot_stack(config: str, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        MODELS.build(phase_recipe(load(config), 'stack').model)


def test_the_peers_train_e2e_s_recipe_for_the_budget_left_after_the_meta_model() -> None:
    cfg = load('incubate_demo_fashion_mnist.py')
    e2e = phase_recipe(cfg, 'e2e')
    for growth in ('stack', 'grow'):
        recipe = phase_recipe(cfg, growth)
        assert recipe.model.backbone.drop_path_rate == e2e.model.backbone.drop_path_rate
        assert recipe.optim_wrapper == e2e.optim_wrapper
        # 68 block-epochs of incubation, 12 of them the meta model's: 56 left, 7 epochs of the 8 blocks
        assert recipe.train_cfg.max_epochs == 7 and e2e.train_cfg.max_epochs == 9


@pytest.fixture(scope='module')
def peers_pipeline(tmp_path_factory, data_root) -> Path:
    cfg = load('incubate_demo_fashion_mnist.py')
    cfg.merge_from_dict(TINY)
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.test_dataloader = cfg.val_dataloader
    for phase in ('meta', 'stack', 'grow'):
        cfg.incubation[phase].train_cfg = dict(max_epochs=2)
    cfg.work_dir = str(tmp_path_factory.mktemp('peers'))
    config = Path(cfg.work_dir) / 'peers.py'
    cfg.dump(str(config))
    result = subprocess.run([sys.executable, 'tools/train.py', str(config), '--phase', 'all', '--cfg-options',
                             'incubation.methods=[stack,grow]'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(cfg.work_dir)


@needs_data
def test_the_peers_products_records_and_costs_are_those_of_any_phase(peers_pipeline) -> None:
    work_dir = peers_pipeline
    records = {r['phase']: r for r in load_records(work_dir)}
    assert set(records) == {'meta', 'stack', 'grow'}  # --phase all of the methods named, nothing else
    for growth, product in (('stack', 'stack/stacked.pth'), ('grow', 'grow/grown.pth')):
        checkpoint = torch.load(work_dir / product, weights_only=True)
        assert checkpoint['meta'][META_KEY]['phase'] == growth and checkpoint['meta'][META_KEY]['holds'] == 'full'
        stock = MODELS.build(load('incubate_demo_fashion_mnist.py').model)
        stock.load_state_dict(checkpoint['state_dict'], strict=True)  # a plain mmpretrain classifier
        assert records[growth]['num_blocks'] == 8 and records[growth]['test_metrics']['accuracy/top1'] > 10
    results = method_results(work_dir)
    assert set(results) == {'stack', 'grow'}
    for growth in ('stack', 'grow'):  # each pays for the meta model it shares, and for its own training
        assert results[growth]['cost'] == pytest.approx(records['meta']['cost'] + records[growth]['cost'])


@needs_data
def test_a_rerun_skips_the_finished_peers_and_the_summary_names_them(peers_pipeline) -> None:
    work_dir = peers_pipeline
    before = {p: p.stat().st_mtime_ns for p in work_dir.rglob('*.pth')}
    result = subprocess.run([sys.executable, 'tools/train.py', str(work_dir / 'peers.py'), '--phase', 'all',
                             '--cfg-options', 'incubation.methods=[stack,grow]'], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in work_dir.rglob('*.pth')} == before
    summary = subprocess.run([sys.executable, 'tools/analysis_tools/summarize_incubation.py', str(work_dir),
                              '--out', str(work_dir / 'curves.png')], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert 'stack (G_stack)' in summary.stdout and 'grow all modules' in summary.stdout
    assert json.loads((work_dir / 'stack' / 'phase_record.json').read_text())['finished']
