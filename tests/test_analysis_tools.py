"""The analysis tools on our configs: mmpretrain 1.2.0's own ``tools/visualization/browse_dataset.py`` (the copy the
installed package ships in ``mmpretrain/.mim/tools``, run as a user runs it), and the fixes it needs (a
visualizer without ``_scope_``, matplotlib's ``adjust_bbox`` called with two arguments); MMEngine's FLOP count
of torch's fused attention; our get_flops.py (the grey demo's one channel) and phase_complexity.py (every
phase's network, numbers that must agree with each other)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.utils import get_installed_path
from mmpretrain.models.utils.attention import MultiheadAttention, scaled_dot_product_attention_pyimpl
from mmpretrain.registry import DATASETS, MODELS, VISUALIZERS
from mmpretrain.visualization import UniversalVisualizer
from PIL import Image

from mmincubation.complexity import input_shape, phase_complexity
from mmincubation.engine.runner import build_layout
from mmincubation.phases import all_phases

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
DEMO = CONFIGS / 'incubate_demo_fashion_mnist.py'
SWIN_DEMO = CONFIGS / 'incubate_demo_fashion_mnist_swin.py'
#: mmpretrain's tools as its package ships them (the files of its repository at v1.2.0).
STOCK_TOOLS = Path(get_installed_path('mmpretrain'), '.mim', 'tools')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}


def demo_config(data_root: str) -> Config:
    cfg = Config.fromfile(str(DEMO))
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': data_root})
    return cfg


def stock_visualizer(cfg: Config) -> UniversalVisualizer:
    """The visualizer as mmpretrain 1.2.0's browse_dataset.py makes it: the config's settings less ``type``, as
    keyword arguments (not through the registry), with its figure size."""
    settings = copy.deepcopy(cfg.visualizer)
    settings.pop('type')
    figure = dict(figsize=(16, 10))
    return UniversalVisualizer(**settings, fig_show_cfg=figure, fig_save_cfg=figure)


def test_stock_browse_dataset_draws_the_demo_images(data_root, tmp_path):
    """The stock tool in its default mode ('transformed': each image drawn on a matplotlib grid and cropped with
    ``adjust_bbox``), in a fresh process that imports mmincubation only through the config's custom_imports."""
    out = tmp_path / 'browse'
    run = subprocess.run([sys.executable, str(STOCK_TOOLS / 'visualization' / 'browse_dataset.py'), str(DEMO),
                          '--not-show', '--show-number', '3', '--output-dir', str(out),
                          '--cfg-options', f'train_dataloader.dataset.data_root={data_root}'],
                         capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert sorted(path.name for path in out.iterdir()) == ['0.jpg', '1.jpg', '2.jpg']
    images = [np.asarray(Image.open(out / f'{index}.jpg').convert('L'), dtype=np.float32) for index in range(3)]
    for image in images:
        assert image.shape[0] > 500 and image.shape[1] > 500  # the 16x9 in grid at 150 dpi, cropped to the image
        assert image.std() > 20  # a garment on a dark ground, not a blank canvas
    assert np.abs(images[0] - images[1]).mean() > 5 and np.abs(images[1] - images[2]).mean() > 5


def test_browse_dataset_calls_label_the_demo_images(data_root):
    """The calls browse_dataset.py (1.2.0) makes, in this process: the demo's dataset built in mmpretrain's scope,
    the visualizer built from the config's settings (as the tool does, and through the registry), and
    ``visualize_cls`` of three images, each titled with its class from the dataset's meta information."""
    cfg = demo_config(data_root)
    assert '_scope_' not in cfg.visualizer
    init_default_scope('mmpretrain')  # the tool's scope, and our configs' default_scope
    assert cfg.default_scope == 'mmpretrain'
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    built = copy.deepcopy(cfg.visualizer)
    built.name = f'browse_{uuid.uuid4().hex}'  # a new instance, not one an earlier test made
    classes = dataset.metainfo['classes']
    assert len(classes) == 10 and classes[9] == 'Ankle boot'
    for visualizer in (stock_visualizer(cfg), VISUALIZERS.build(built)):
        assert isinstance(visualizer, UniversalVisualizer)
        visualizer.dataset_meta = dataset.metainfo
        for index in range(3):
            item = dataset[index]
            image = np.asarray(dataset.get_data_info(index)['img'])
            sample = item['data_samples'].numpy()
            label = int(sample.gt_label[0])
            with mock.patch.object(visualizer.ax_save, 'text', wraps=visualizer.ax_save.text) as text:
                drawn = visualizer.visualize_cls(np.repeat(image[..., None], 3, axis=2), sample, show=False,
                                                 name=f'{index}.jpg')
            assert text.call_args.args[2] == f'Ground truth: {label} ({classes[label]})'
            assert drawn.shape == (28, 28, 3)
            assert not np.array_equal(drawn[..., 0], image)  # the title was drawn on it


def test_a_visualizer_with_scope_is_what_the_stock_tool_cannot_take(tmp_path):
    """What the fix removes: a config whose visualizer comes straight from a ``mmpretrain::`` base carries
    ``_scope_`` (MMEngine adds it to every top-level dict of such a base) and the tool's keyword call fails."""
    config = tmp_path / 'scoped_runtime.py'
    config.write_text("_base_ = 'mmpretrain::_base_/default_runtime.py'\n")
    cfg = Config.fromfile(str(config))
    assert cfg.visualizer._scope_ == 'mmpretrain'
    with pytest.raises(TypeError, match="unexpected keyword argument '_scope_'"):
        stock_visualizer(cfg)


@pytest.mark.parametrize('name', ['incubate_demo_fashion_mnist_swin.py', 'incubate_vit_b.py',
                                  'incubate_swin_b_deit3.py', 'cifar100/incubate_deit_t_32.py'])
def test_every_runtime_chain_gives_the_stock_tool_a_visualizer(load, name):
    """One pipeline per way the runtime enters our configs: _base_/default_runtime.py (directly, through
    schedules/deit_adamw_bs512.py, through the CIFAR recipe) and mmpretrain's DeiT-III config
    (e2e_vit_b_deit3.py); mmpretrain's type and backends, no scope."""
    cfg = load(CONFIGS / name)
    assert cfg.visualizer == dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
    assert isinstance(stock_visualizer(cfg), UniversalVisualizer)


def test_adjust_bbox_takes_the_two_arguments_of_mmpretrain_1_2_0():
    """browse_dataset.py's make_grid crops its figure with ``adjust_bbox(figure, bbox)``; today's matplotlib asks
    for a renderer too. With our defaults the two-argument call crops the figure and its restore undoes it."""
    from matplotlib import _tight_bbox, transforms
    from mmpretrain.visualization import create_figure

    figure = create_figure(dpi=100, figsize=(4, 3))
    figure.add_subplot(1, 1, 1).imshow(np.zeros((8, 8)))
    restore = _tight_bbox.adjust_bbox(figure, transforms.Bbox([[1, 1], [3, 2]]))
    assert tuple(figure.bbox.size) == (200, 100)
    restore()
    assert tuple(figure.bbox.size) == (400, 300)


def demo_vit_flops(width: int = 64, mlp: int = 256, blocks: int = 8, tokens: int = 7 * 7 + 1, patch: int = 4,
                   classes: int = 10) -> int:
    """The demo ViT's multiply-adds for one 1x28x28 image, counted by hand as MMEngine counts: Linear,
    convolution and matrix products, 5 per element of an affine LayerNorm, nothing for softmax, GELU, additions."""
    block = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width + 2 * 5 * tokens * width
    return blocks * block + (tokens - 1) * patch * patch * width + 5 * tokens * width + width * classes


def test_fused_attention_is_counted_as_its_written_out_form(one_thread):
    """mmpretrain's ViT attention calls torch's fused scaled_dot_product_attention: with our handle MMEngine counts
    it (no longer an unsupported op), as many FLOPs as mmpretrain's matmul form of the same attention."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(str(DEMO)).model).eval()
    inputs = (torch.randn(1, 1, 28, 28), )
    analyzer = FlopAnalyzer(model, inputs)
    fused = analyzer.total()
    assert 'aten::scaled_dot_product_attention' not in analyzer.unsupported_ops()
    for module in model.modules():
        if isinstance(module, MultiheadAttention):
            module.scaled_dot_product_attention = scaled_dot_product_attention_pyimpl
    written_out = get_model_complexity_info(model, inputs=inputs, show_table=False, show_arch=False)['flops']
    assert fused == written_out == demo_vit_flops() == 22_543_616


def test_input_shape_is_read_from_the_backbone(load):
    demo, vit_b = load(DEMO), load(CONFIGS / 'incubate_vit_b.py')
    assert input_shape(demo) == (1, 28, 28) and input_shape(load(SWIN_DEMO)) == (1, 28, 28)
    assert input_shape(vit_b) == (3, 224, 224)
    assert input_shape(demo, (56, )) == (1, 56, 56) and input_shape(demo, (28, 42)) == (1, 28, 42)
    del demo.model.backbone['img_size'], demo.model.backbone['in_channels']
    assert input_shape(demo) == (3, 224, 224)  # what mmpretrain's VisionTransformer defaults to
    for bad in ((), (0, ), (28, 28, 28)):
        with pytest.raises(ValueError, match='one or two positive whole numbers'):
            input_shape(vit_b, bad)


@pytest.mark.parametrize('config', [DEMO, SWIN_DEMO], ids=['vit', 'swin'])
def test_phase_networks_add_up(load, one_thread, config):
    """Every phase's network as the pipeline builds it: the numbers must agree with each other and with the
    layout: a hybrid is its real module among the meta model's others, and trains that module only."""
    cfg = load(config)
    rows = phase_complexity(cfg)
    assert [row.phase for row in rows] == all_phases(build_layout(cfg).num_modules)  # the peers run when named
    meta, *hybrids = [row for row in rows if row.phase.name in ('meta', 'incubate')]
    full = {row.phase.name: row for row in rows if row.network == 'full model'}
    assert sorted(full) == ['assemble', 'e2e', 'finetune'] and meta.network == 'meta model'
    assert len({(row.cost.params, row.cost.flops) for row in full.values()}) == 1  # the same full model
    whole = full['finetune'].cost
    assert whole.params == sum(whole.module_params)  # every parameter belongs to a module
    assert meta.cost.trainable == meta.cost.params and whole.trainable == whole.params
    for k, hybrid in enumerate(hybrids):
        assert hybrid.network == 'hybrid' and hybrid.phase.module == k
        assert meta.cost.params < hybrid.cost.params < whole.params
        assert hybrid.cost.trainable == hybrid.cost.module_params[k] == whole.module_params[k]
        assert hybrid.cost.params == whole.module_params[k] + sum(
            meta.cost.module_params[j] for j in range(len(hybrids)) if j != k)
        assert 0 < meta.cost.flops < hybrid.cost.flops < whole.flops
    # blocks add their FLOPs: the full model's blocks beyond the meta model's are the hybrids' beyond it
    assert whole.flops - meta.cost.flops == sum(hybrid.cost.flops - meta.cost.flops for hybrid in hybrids)
    if config == DEMO:  # 8 equal blocks, 2 per module: each hybrid is the meta model and one block more
        assert whole.flops == demo_vit_flops()
        assert {hybrid.cost.flops - meta.cost.flops for hybrid in hybrids} == {
            (demo_vit_flops(blocks=8) - demo_vit_flops(blocks=4)) // 4}


def test_phase_complexity_command_prints_the_table():
    run = subprocess.run([sys.executable, str(ROOT / 'tools' / 'analysis_tools' / 'phase_complexity.py'), str(DEMO)],
                         capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith('input 1x28x28, one image') and lines[1].split() == [
        'phase', 'network', 'modules', 'blocks', 'params', 'trainable', 'FLOPs', 'of', 'full']
    rows = {line[:20].strip(): line[20:].split() for line in lines[2:-1]}
    assert list(rows) == [str(phase) for phase in all_phases(4)]
    assert rows['meta'] == ['meta', 'model', '1+1+1+1', '4', '0.205M', '0.205M', '11.305M', '0.501']
    assert rows['incubate module 1'] == ['hybrid', '1+2+1+1', '5', '0.255M', '99.968K', '14.115M', '0.626']
    assert rows['assemble'] == ['full', 'model', '2+2+2+2', '8', '0.405M', '-', '22.544M', '1.000']
    assert lines[-1] == ('parameters of each module in the full model: 0: 0.104M, 1: 99.968K, 2: 99.968K, '
                         '3: 0.101M; together 0.405M of 0.405M')
    assert 'WARNING' not in run.stdout + run.stderr  # MMEngine's warnings of each count stay out of the table


def test_get_flops_counts_the_grey_demo(capsys):
    """Ours feeds the one channel the demo's ViT takes (mmpretrain's get_flops.py feeds three and fails)."""
    from tools.analysis_tools.get_flops import main

    main([str(DEMO)])
    out = capsys.readouterr().out
    assert '| model ' in out and 'backbone.layers.7' in out  # MMEngine's table, layer by layer
    assert out.rstrip().splitlines()[-4:] == ['input shape: (1, 28, 28)', f'FLOPs: 22.544M ({demo_vit_flops()} '
                                              'multiply-adds)', 'params: 0.405M (405002)', 'activations: 0.234M']
    with pytest.raises(SystemExit, match='config missing.py does not exist'):
        main(['missing.py'])
