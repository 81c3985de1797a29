"""Export to timm and safetensors: the timm model loads the export strictly and gives the same logits.

Every parameter is random (LayerNorm scales around 1, patch-merging norms included), so a key mapped to
the wrong place, a permutation missed or a norm in the wrong position changes the logits.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import tiny_pipeline
from mmengine.config import Config
from mmpretrain.registry import DATASETS, MODELS
from safetensors.torch import load_file
from torch import nn

import mmincubation  # noqa: F401  (registers mmincubation.*)
from mmincubation.checkpoint import CheckpointError
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.runner import IncubationRunner, build_layout, phase_recipe
from mmincubation.export import (
    ExportError,
    TimmSpec,
    export_safetensors_file,
    export_timm_file,
    read_safetensors,
    timm_export,
)
from mmincubation.tags import META_KEY, Tag
from tools.model_converters.mmincubation_to_timm import main as to_timm

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'
DEMO_SWIN = ROOT / 'configs' / 'incubate_demo_fashion_mnist_swin.py'
CLASSES = [f'class {i}' for i in range(10)]
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')

pytestmark = pytest.mark.usefixtures('one_thread')


def randomised(model: nn.Module) -> nn.Module:
    """``model`` with every parameter random: norm scales around 1, everything else around 0; eval mode."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_scale = name.endswith('.weight') and any(part.startswith(('ln', 'norm'))
                                                        for part in name.split('.')[-2:])
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if is_scale else 0.0))
    return model.eval()


def tiny_vit(**backbone) -> dict:
    """A grey 28x28 ViT classifier config (width 32, 2 blocks), ``backbone`` settings on top."""
    neck = backbone.pop('neck', None)
    head = backbone.pop('head', dict(type='VisionTransformerClsHead', num_classes=10, in_channels=32))
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    return dict(type='ImageClassifier', neck=neck, head=head,
                backbone=dict(dict(type='VisionTransformer', img_size=28, patch_size=4, in_channels=1, arch=arch),
                              **backbone))


def tiny_swin(depths: tuple[int, ...], img_size: int, **backbone) -> dict:
    """A grey Swin classifier config (patch 2, window 7, width 16 doubling per stage)."""
    heads = [2 ** s for s in range(len(depths))]
    return dict(type='ImageClassifier', neck=dict(type='GlobalAveragePooling'),
                backbone=dict(type='SwinTransformer', arch=dict(embed_dims=16, depths=list(depths), num_heads=heads),
                              img_size=img_size, patch_size=2, in_channels=1, window_size=7,
                              out_indices=(len(depths) - 1, ), drop_path_rate=0., **backbone),
                head=dict(type='LinearClsHead', num_classes=10, in_channels=16 * 2 ** (len(depths) - 1)))


def timm_model(spec: TimmSpec, state: dict) -> nn.Module:
    model = timm.create_model(spec.model_name, pretrained=False, **spec.create_kwargs()).eval()
    model.load_state_dict(state, strict=True)
    return model


def assert_same_logits(ours: nn.Module, theirs: nn.Module, img_size: int, channels: int = 1) -> None:
    x = torch.randn(3, channels, img_size, img_size)
    with torch.no_grad():
        expected, actual = ours(x, mode='tensor'), theirs(x)
    assert expected.abs().max() > 0.1  # not degenerate
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


# --- 1. ViT: the same logits as timm's vit_* --------------------------------------------------------


def test_the_demo_vit_gives_timm_logits(load):
    cfg = phase_recipe(load(DEMO), 'finetune')
    model = randomised(MODELS.build(cfg.model))
    spec, state = timm_export(model, cfg.data_preprocessor, CLASSES)
    assert spec.model_name == 'vit_base_patch16_224' and spec.norm_eps is None
    assert {key: spec.kwargs[key] for key in ('img_size', 'patch_size', 'in_chans', 'embed_dim', 'depth', 'num_heads',
                                              'mlp_ratio', 'num_classes', 'global_pool', 'class_token')} == dict(
        img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=8, num_heads=2, mlp_ratio=4.0, num_classes=10,
        global_pool='token', class_token=True)
    theirs = timm_model(spec, state)
    assert_same_logits(model, theirs, 28)
    # the data config timm derives: grey 28x28, mmpretrain's 0-255 mean/std as 0-1 values, the class names
    data = timm.data.resolve_data_config(model=theirs)
    assert data['input_size'] == (1, 28, 28)
    assert data['mean'] == pytest.approx((72.94 / 255, )) and data['std'] == pytest.approx((90.02 / 255, ))
    assert theirs.pretrained_cfg['label_names'] == tuple(CLASSES)


VIT_VARIANTS = {
    # official ViT-H-like: no qkv bias, LayerNorm eps 1e-5 (not timm's default: a norm_layer), a LinearClsHead
    'H-like': dict(qkv_bias=False, norm_cfg=dict(type='LN', eps=1e-5),
                   head=dict(type='LinearClsHead', num_classes=10, in_channels=32)),
    'avg_featmap': dict(out_type='avg_featmap', final_norm=False, with_cls_token=False),
    'featmap+GAP, layer scale, pre_norm': dict(out_type='featmap', neck=dict(type='GlobalAveragePooling'),
                                               layer_scale_init_value=0.1, pre_norm=True),
    'no final norm': dict(final_norm=False),
    # mmpretrain's DeiT3: pos_embed without the class token, layer scale, ln1 before both branches (ln2 unused)
    'DeiT3': dict(type='DeiT3'),
    'DeiT3 featmap+GAP': dict(type='DeiT3', out_type='featmap', neck=dict(type='GlobalAveragePooling')),
}


@pytest.mark.parametrize('settings', VIT_VARIANTS.values(), ids=VIT_VARIANTS.keys())
def test_vit_variants_give_timm_logits(settings):
    model = randomised(MODELS.build(tiny_vit(**settings)))
    spec, state = timm_export(model)
    assert_same_logits(model, timm_model(spec, state), 28)


def test_the_python_lines_build_and_load_the_export(tmp_path):
    model = randomised(MODELS.build(tiny_vit(qkv_bias=False, norm_cfg=dict(type='LN', eps=1e-5))))
    spec, state = timm_export(model)
    assert spec.norm_eps == 1e-5
    torch.save(state, tmp_path / 'vit.pth')
    scope = {}
    exec(spec.python(str(tmp_path / 'vit.pth')), scope)
    assert_same_logits(model, scope['model'].eval(), 28)


# --- 2. Swin: the same logits as timm's swin_* ------------------------------------------------------


@pytest.mark.parametrize('depths, img_size, settings, always_partition', [
    ((2, 2, 2), 56, {}, False),                       # maps 28, 14, 7: the last is one window, not shifted
    ((2, 2), 28, dict(pad_small_map=True), True),     # maps 14, 7: pad_small_map shifts the one-window map too
], ids=['three stages', 'pad_small_map'])
def test_swin_gives_timm_logits(depths, img_size, settings, always_partition):
    model = randomised(MODELS.build(tiny_swin(depths, img_size, **settings)))
    spec, state = timm_export(model)
    assert spec.model_name == 'swin_base_patch4_window7_224'
    assert spec.kwargs['always_partition'] is always_partition and spec.kwargs['depths'] == list(depths)
    # patch merging moves to the start of the next timm stage, its 4C axis permuted; index buffers are timm's own
    assert 'layers.1.downsample.reduction.weight' in state and not any('relative_position_index' in k for k in state)
    assert_same_logits(model, timm_model(spec, state), img_size)


def test_the_demo_swin_is_refused_naming_the_window(load):
    # its last stage is a 4x4 map that mmpretrain pads to the 7x7 window and then shifts; timm shifts before padding
    cfg = phase_recipe(load(DEMO_SWIN), 'finetune')
    model = MODELS.build(cfg.model).eval()
    with pytest.raises(ExportError, match=r"model\.backbone\.window_size=7: .*block 1 of stage 2.*rolls the 4x4 map"):
        timm_export(model)


# --- 3. What timm cannot express: one line naming the field ----------------------------------------


REFUSED = {
    'another backbone': (dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18), neck=None,
                              head=dict(type='LinearClsHead', num_classes=10, in_channels=512)),
                         r"model\.backbone\.type='ResNet'"),
    'DeiT (own forward)': (tiny_vit(type='DistilledVisionTransformer'),
                           r"model\.backbone\.type='DistilledVisionTransformer'"),
    'raw tokens': (tiny_vit(out_type='raw'), r"model\.backbone\.out_type='raw'"),
    'norm before the average': (tiny_vit(out_type='avg_featmap'), r'model\.backbone\.final_norm=True'),
    'DeiT3 average (no ln2)': (tiny_vit(type='DeiT3', out_type='avg_featmap'), r"model\.backbone\.out_type='avg_feat"),
    'hidden head layer': (tiny_vit(head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=32,
                                             hidden_dim=8)), r"model\.head\.type='VisionTransformerClsHead with"),
    'earlier block classified': (tiny_vit(out_indices=[0]), r'model\.backbone\.out_indices=\[0\]'),
    'Swin absolute position embedding': (tiny_swin((2, 2), 28, use_abs_pos_embed=True),
                                         r'model\.backbone\.use_abs_pos_embed=True'),
}


@pytest.mark.parametrize('model_cfg, message', REFUSED.values(), ids=REFUSED.keys())
def test_what_timm_cannot_express_is_refused(model_cfg, message):
    with pytest.raises(ExportError, match=message) as error:
        timm_export(MODELS.build(model_cfg))
    assert '\n' not in str(error.value)


# --- 4. Files: safetensors round trip, outputs never replaced unasked, the tools -------------------


@pytest.fixture(scope='module')
def product(tmp_path_factory) -> tuple[Path, nn.Module]:
    """A fine-tuned product of the demo pipeline as the pipeline writes one (tag, dataset_meta), random weights."""
    cfg = Config.fromfile(str(DEMO))
    model = randomised(MODELS.build(phase_recipe(cfg, 'finetune').model))
    tag = Tag.of_layout('finetune', build_layout(cfg).tag())
    path = tmp_path_factory.mktemp('product') / 'finetuned.pth'
    torch.save(dict(meta=tag.meta(dataset_meta=dict(classes=CLASSES)), state_dict=model.state_dict()), path)
    return path, model


def test_safetensors_round_trip_gives_identical_logits(product, tmp_path):
    path, model = product
    out = export_safetensors_file(path, tmp_path / 'demo.safetensors')
    loaded = read_safetensors(out)
    assert loaded['meta'][META_KEY] == torch.load(path, weights_only=True)['meta'][META_KEY]
    assert loaded['meta']['dataset_meta'] == dict(classes=CLASSES)
    again = MODELS.build(phase_recipe(Config.fromfile(str(DEMO)), 'finetune').model).eval()
    again.load_state_dict(loaded['state_dict'], strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x, mode='tensor'), model(x, mode='tensor'))


def test_an_existing_output_is_refused_unless_forced(product, tmp_path):
    path, _ = product
    out = tmp_path / 'demo.safetensors'
    out.write_bytes(b'keep me')
    with pytest.raises(CheckpointError, match='already exists'):
        export_safetensors_file(path, out)
    with pytest.raises(CheckpointError, match='already exists'):
        export_timm_file(Config.fromfile(str(DEMO)), path, out)
    assert out.read_bytes() == b'keep me' and sorted(p.name for p in tmp_path.iterdir()) == ['demo.safetensors']
    export_safetensors_file(path, out, force=True)
    assert read_safetensors(out)['meta']['dataset_meta'] == dict(classes=CLASSES)
    with pytest.raises(CheckpointError, match='would overwrite the input'):
        export_timm_file(Config.fromfile(str(DEMO)), path, path, force=True)


def test_bad_file_names_and_files_are_refused_in_one_line(product, tmp_path):
    path, _ = product
    with pytest.raises(CheckpointError, match=r'demo\.pt: expected a file name ending in \.pth or \.safetensors'):
        export_timm_file(Config.fromfile(str(DEMO)), path, tmp_path / 'demo.pt')
    broken = tmp_path / 'broken.safetensors'
    broken.write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError, match=f'cannot read safetensors file {broken}'):
        read_safetensors(broken)


def test_a_plain_deit3_checkpoint_exports_to_safetensors(tmp_path):
    """A plain mmpretrain config and checkpoint (no tag); DeiT3's ln1 goes to two timm keys: saved as two tensors."""
    cfg = Config(dict(model=tiny_vit(type='DeiT3')))
    model = randomised(MODELS.build(cfg.model))
    torch.save(model.state_dict(), tmp_path / 'deit3.pth')
    out, spec_path, spec = export_timm_file(cfg, tmp_path / 'deit3.pth', tmp_path / 'deit3.safetensors')
    assert spec.kwargs['no_embed_class'] is True and spec.kwargs['init_values'] is not None
    assert_same_logits(model, timm_model(TimmSpec.from_json(json.loads(spec_path.read_text())), load_file(out)), 28)


def run_tools(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Each ``python ARGS`` in a fresh process, all at once (each spends seconds importing the stack)."""
    running = [(args, subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)) for args in commands]
    finished = []
    for args, process in running:
        stdout, stderr = process.communicate(timeout=300)
        finished.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return finished


def test_the_tools_export_a_product(product, tmp_path):
    path, model = product
    out, plain = tmp_path / 'timm' / 'vit_demo.safetensors', tmp_path / 'demo.safetensors'
    to_timm_run, plain_run = run_tools(['tools/model_converters/mmincubation_to_timm.py', str(DEMO), str(path),
                                        str(out)],
                                       ['tools/model_converters/to_safetensors.py', str(path), str(plain)])
    assert to_timm_run.returncode == 0, to_timm_run.stderr[-3000:]
    assert "model = timm.create_model('vit_base_patch16_224', pretrained=False, img_size=28" in to_timm_run.stdout
    spec = TimmSpec.from_json(json.loads(Path(f'{out}.json').read_text()))
    theirs = timm_model(spec, load_file(out))
    assert_same_logits(model, theirs, 28)
    metadata = read_safetensors(out)['meta']
    assert metadata['dataset_meta'] == dict(classes=CLASSES) and metadata['timm'] == spec.to_json()
    assert metadata[META_KEY]['phase'] == 'finetune'
    with pytest.raises(SystemExit, match=f'^error: output {out} already exists; nothing written'):
        to_timm([str(DEMO), str(path), str(out)])  # in this process: the tool refuses in one line

    assert plain_run.returncode == 0, plain_run.stderr[-3000:]
    assert read_safetensors(plain)['state_dict'].keys() == model.state_dict().keys()

@needs_data
def test_a_real_product_gives_timm_logits_through_timms_data_config(tmp_path, data_root):
    """The tiny pipeline's E2E product (one phase: the cheapest real product), exported, classifies real test
    images as mmpretrain does, the input normalised as timm's data config says (0-1 pixels), not by mmpretrain."""
    config = tmp_path / 'tiny.py'
    config.write_text(tiny_pipeline(data_root, indices=256, epochs=1, drop_path=0.0))
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(tmp_path / 'work')
    IncubationRunner(cfg, phases=('e2e', )).train()
    product = tmp_path / 'work' / 'e2e' / 'e2e.pth'
    out, _, spec = export_timm_file(cfg, product, tmp_path / 'e2e.safetensors')
    theirs = timm_model(spec, load_file(out))
    data = timm.data.resolve_data_config(model=theirs)
    assert theirs.pretrained_cfg['label_names'][0] == 'T-shirt/top'

    recipe = phase_recipe(cfg, 'finetune')
    ours = MODELS.build(dict(recipe.model, data_preprocessor=dict(type='ClsDataPreprocessor',
                                                                  **recipe.data_preprocessor))).eval()
    ours.load_state_dict(torch.load(product, weights_only=True)['state_dict'], strict=True)
    test = DATASETS.build(recipe.test_dataloader.dataset)
    pixels = torch.stack([test[i]['inputs'] for i in range(len(test))]).float()  # (N, 1, 28, 28), 0-255
    normalised = (pixels / 255 - torch.tensor(data['mean']).view(1, -1, 1, 1)) / torch.tensor(data['std']).view(
        1, -1, 1, 1)
    with torch.no_grad():
        expected = ours(ours.data_preprocessor(dict(inputs=list(pixels)))['inputs'], mode='tensor')
        actual = theirs(normalised)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    assert torch.equal(actual.argmax(1), expected.argmax(1))
