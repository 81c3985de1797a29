"""Official Deep Incubation checkpoints (timm keys, per-stage local keys) convert to exact mmpretrain models.

The official files are made here the way the official code makes them: a timm ``VisionTransformer``
whose stages are ``nn.Module`` views on its blocks (``_register_modules``), saved as ``{'model':
state_dict (with the ``stages.*`` duplicates), 'model_stages': [stage.state_dict(), ...], 'args':
Namespace, ...}``, or with the first release's empty ``model_stages``.
"""
from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import pytest
import torch
from mmpretrain.registry import MODELS
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

import mmincubation  # noqa: F401  (registers mmincubation.*)
from mmincubation.checkpoint import META_KEY, CheckpointError, load_weights
from mmincubation.convert_official import convert_official, convert_official_file
from mmincubation.models.incubation_classifier import IncubationClassifier
from tools.convert_official import main as cli

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'
TINY = dict(img=32, patch=8, in_chans=3, width=32, heads=2, classes=5)  # timm and mmpretrain alike
DEMO_ARCH = dict(img=28, patch=4, in_chans=1, width=64, heads=2, classes=10)  # the demo config's model
B_LIKE = dict(qkv_bias=True, eps=1e-6)   # official ViT-B/L
H_LIKE = dict(qkv_bias=False, eps=1e-5)  # official ViT-H/14


pytestmark = pytest.mark.usefixtures('one_thread')


def timm_vit(depth: int, qkv_bias: bool = True, eps: float = 1e-6, arch: dict = TINY) -> TimmViT:
    """A timm ViT with every parameter random (LayerNorm scales around 1), in eval mode."""
    model = TimmViT(img_size=arch['img'], patch_size=arch['patch'], in_chans=arch['in_chans'],
                    embed_dim=arch['width'], depth=depth, num_heads=arch['heads'], num_classes=arch['classes'],
                    qkv_bias=qkv_bias, norm_layer=partial(nn.LayerNorm, eps=eps))
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_scale = 'norm' in name and name.endswith('weight')
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if is_scale else 0.0))
    return model.eval()


def official_stages(model: TimmViT, depths: tuple[int, ...]) -> list[nn.Module]:
    """The official ``_register_modules``: stage modules sharing the network's parameters."""
    stages = [nn.Module() for _ in depths]
    stages[0].pos_embed, stages[0].cls_token = model.pos_embed, model.cls_token
    stages[0].patch_embed = model.patch_embed
    blocks = iter(model.blocks)
    for stage, depth in zip(stages, depths):
        stage.blocks = nn.ModuleList([next(blocks) for _ in range(depth)])
    stages[-1].norm, stages[-1].head = model.norm, model.head
    return stages


def official_checkpoint(model: TimmViT, depths: tuple[int, ...], populated: bool = True) -> dict:
    """What the official ``utils.save_model`` writes (``populated=False``: the first release)."""
    stages = official_stages(model, depths)
    state = dict(model.state_dict())
    for k, stage in enumerate(stages):  # nn.Module.state_dict() keeps shared parameters twice
        state.update({f'stages.{k}.{key}': value for key, value in stage.state_dict().items()})
    return {
        'model': state,
        'model_stages': [stage.state_dict() for stage in stages] if populated else [],
        'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3, 'betas': (0.9, 0.999), 'params': [0, 1]}]},
        'lr_scheduler': {'t_initial': 300, 'base_values': [1e-3]},
        'epoch': 299,
        'scaler': {'scale': 65536.0, 'growth_factor': 2.0},
        'args': argparse.Namespace(model='deit_base_patch16_224', phase='PT', divided_depths=list(depths)),
    }


def save(checkpoint: dict, path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


def mm_backbone(depth: int, qkv_bias: bool, eps: float, arch: dict = TINY) -> dict:
    return dict(type='VisionTransformer', img_size=arch['img'], patch_size=arch['patch'],
                in_channels=arch['in_chans'], qkv_bias=qkv_bias, norm_cfg=dict(type='LN', eps=eps),
                arch=dict(embed_dims=arch['width'], num_layers=depth, num_heads=arch['heads'],
                          feedforward_channels=4 * arch['width']))


def mm_head(arch: dict = TINY) -> dict:
    return dict(type='VisionTransformerClsHead', num_classes=arch['classes'], in_channels=arch['width'])


def mm_classifier(depth: int, qkv_bias: bool, eps: float) -> nn.Module:
    return MODELS.build(dict(type='ImageClassifier', backbone=mm_backbone(depth, qkv_bias, eps),
                             neck=None, head=mm_head())).eval()


def record_of(path: Path) -> dict:
    return load_weights(path)['meta'][META_KEY]


def assert_same_logits(converted: Path, timm_model: TimmViT, qkv_bias: bool, eps: float) -> None:
    model = mm_classifier(len(timm_model.blocks), qkv_bias, eps)
    model.load_state_dict(load_weights(converted)['state_dict'], strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, actual = timm_model(x), model(x, mode='tensor')
    assert expected.abs().max() > 0.1  # the weights are not degenerate
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def only_file(directory: Path, name: str) -> None:
    """A failed conversion leaves no output and no temporary file behind."""
    assert sorted(p.name for p in directory.iterdir()) == [name]


# --- 1. Full models: the same logits as timm's ---------------------------------------------------


@pytest.mark.parametrize('variant', [B_LIKE, H_LIKE], ids=['B-like', 'H-like'])
@pytest.mark.parametrize('populated', [True, False], ids=['model_stages', 'empty_model_stages'])
def test_full_model_gives_timm_logits(tmp_path, variant, populated):
    timm_model = timm_vit(4, **variant)
    src = save(official_checkpoint(timm_model, (1, 2, 1), populated), tmp_path / 'official.pth')
    out = convert_official_file(src, tmp_path / 'out' / 'converted.pth')
    assert_same_logits(out, timm_model, **variant)
    state = load_weights(out)['state_dict']
    assert ('backbone.layers.3.attn.qkv.bias' in state) is variant['qkv_bias']
    assert not any(key.startswith('stages.') or 'blocks.' in key for key in state)
    # The stage depths come from model_stages, or from the key structure of model's stages.* duplicates.
    assert record_of(out) == dict(phase='assemble', layout=[1, 2, 1], backbone='vit', stages=[4], holds='full',
                                source=str(src))


def test_old_file_without_stage_keys_takes_the_given_module_depths(tmp_path):
    timm_model = timm_vit(4)
    checkpoint = official_checkpoint(timm_model, (2, 2), populated=False)
    checkpoint['model'] = {k: v for k, v in checkpoint['model'].items() if not k.startswith('stages.')}
    src = save(checkpoint, tmp_path / 'official.pth')
    assert record_of(convert_official_file(src, tmp_path / 'a.pth'))['layout'] == [4]
    out = convert_official_file(src, tmp_path / 'b.pth', module_depths=(1, 3))
    assert record_of(out)['layout'] == [1, 3]
    assert_same_logits(out, timm_model, **B_LIKE)


def test_stage_tensors_are_used_not_the_model_copy(tmp_path):
    """With model_stages, the stages are the source (as for the official --finetune / assembly)."""
    timm_model = timm_vit(2)
    checkpoint = official_checkpoint(timm_model, (1, 1))
    checkpoint['model'] = {k: torch.zeros_like(v) for k, v in checkpoint['model'].items()}
    src = save(checkpoint, tmp_path / 'official.pth')
    assert_same_logits(convert_official_file(src, tmp_path / 'out.pth'), timm_model, **B_LIKE)


# --- 2. Meta models: accepted by the hybrid, blocks in the right slots ---------------------------


@pytest.mark.parametrize('populated, variant', [(True, B_LIKE), (False, H_LIKE)],
                         ids=['B-like-model_stages', 'H-like-empty_model_stages'])
def test_meta_model_feeds_the_hybrid(tmp_path, populated, variant):
    timm_meta = timm_vit(4, **variant)
    src = save(official_checkpoint(timm_meta, (1, 1, 1, 1), populated), tmp_path / 'meta_official.pth')
    out = convert_official_file(src, tmp_path / 'meta.pth', meta=True, module_depths=(2, 2, 2, 2))
    assert record_of(out) == dict(phase='meta', layout=[2, 2, 2, 2], backbone='vit', stages=[8], holds='meta',
                                source=str(src))

    target = 1
    hybrid = IncubationClassifier(backbone=mm_backbone(5, **variant), head=mm_head(), neck=None,
                                  module_depths=(2, 2, 2, 2), target_module=target).eval()
    fresh_target = [p.clone() for p in hybrid.backbone.layers[1].parameters()]
    hybrid.load_meta_modules(str(out))
    tokens = torch.randn(2, 17, 32)
    with torch.no_grad():
        for module in (0, 2, 3):
            layer = hybrid.backbone.layers[hybrid.layout.first_block(module)]
            torch.testing.assert_close(layer(tokens), timm_meta.blocks[module](tokens), atol=1e-5, rtol=0)
    for fresh, param in zip(fresh_target, hybrid.backbone.layers[1].parameters()):
        assert torch.equal(fresh, param)  # the target module keeps its own initialisation
    assert torch.equal(hybrid.backbone.pos_embed, timm_meta.pos_embed)
    assert torch.equal(hybrid.backbone.patch_embed.projection.weight, timm_meta.patch_embed.proj.weight)
    assert torch.equal(hybrid.backbone.ln1.weight, timm_meta.norm.weight)
    assert torch.equal(hybrid.head.layers.head.bias, timm_meta.head.bias)


def test_meta_full_depth_splits_into_equal_modules(tmp_path):
    src = save(official_checkpoint(timm_vit(4), (1, 1, 1, 1)), tmp_path / 'meta_official.pth')
    cli([str(src), str(tmp_path / 'meta.pth'), '--meta', '--full-depth', '12'])
    assert record_of(tmp_path / 'meta.pth')['layout'] == [3, 3, 3, 3]


# --- 3. Validation against one of our configs ----------------------------------------------------


def test_config_validates_full_and_meta_models(tmp_path):
    timm_full = timm_vit(8, arch=DEMO_ARCH)
    src = save(official_checkpoint(timm_full, (2, 2, 2, 2)), tmp_path / 'full_official.pth')
    cli([str(src), str(tmp_path / 'full.pth'), '--config', str(DEMO)])
    assert record_of(tmp_path / 'full.pth')['layout'] == [2, 2, 2, 2]

    src = save(official_checkpoint(timm_vit(4, arch=DEMO_ARCH), (1, 1, 1, 1)), tmp_path / 'meta_official.pth')
    cli([str(src), str(tmp_path / 'meta.pth'), '--meta', '--config', str(DEMO)])  # depths from the config
    assert record_of(tmp_path / 'meta.pth') == dict(phase='meta', layout=[2, 2, 2, 2], backbone='vit', stages=[8],
                                                    holds='meta', source=str(src))


def test_config_mismatch_fails_and_writes_nothing(tmp_path, capsys):
    src = save(official_checkpoint(timm_vit(4), (1, 1, 1, 1)), tmp_path / 'meta_official.pth')
    with pytest.raises(SystemExit) as failure:  # width 32 vs the demo's 64
        cli([str(src), str(tmp_path / 'meta.pth'), '--meta', '--config', str(DEMO)])
    assert 'shape mismatches' in str(failure.value) and 'backbone.cls_token' in str(failure.value)

    config = tmp_path / 'tiny_vit_b_like.py'  # qkv bias, as in our B/L configs, for an H-like file
    config.write_text(f'model = dict(type="ImageClassifier", backbone={mm_backbone(4, **B_LIKE)!r}, neck=None, '
                      f'head={mm_head()!r})\nincubation = dict(module_depths=[1, 1, 1, 1])\n')
    src_h = save(official_checkpoint(timm_vit(4, **H_LIKE), (1, 1, 1, 1)), tmp_path / 'h_official.pth')
    with pytest.raises(SystemExit) as failure:
        cli([str(src_h), str(tmp_path / 'meta.pth'), '--meta', '--config', str(config)])
    assert 'missing keys: backbone.layers.0.attn.qkv.bias' in str(failure.value)
    with pytest.raises(SystemExit) as failure:
        cli([str(src_h), str(tmp_path / 'meta.pth'), '--meta', '--config', str(config), '--module-depths', '2', '2'])
    assert 'disagree' in str(failure.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['meta_official.pth', 'h_official.pth', config.name])


# --- 4. Bad input: a clear error, nothing written ------------------------------------------------


def _stage(checkpoint: dict, k: int) -> dict:
    return checkpoint['model_stages'][k]


def _drop(key):
    return lambda ckpt: _stage(ckpt, 1).pop(key)


def _add(k, key, value):
    return lambda ckpt: _stage(ckpt, k).__setitem__(key, value)


def _narrow_qkv(ckpt):
    stage = _stage(ckpt, 1)
    stage['blocks.1.attn.qkv.weight'] = stage['blocks.1.attn.qkv.weight'][:64]


BAD_FILES = {
    # stage 1 holds global blocks 1 and 2: its local blocks.1 is the model's blocks.2
    'missing key': (_drop('blocks.1.mlp.fc2.bias'), r'official\.pth \(model_stages\).*missing keys: '
                                                    r'blocks\.2\.mlp\.fc2\.bias'),
    'missing stem': (lambda ckpt: _stage(ckpt, 0).pop('cls_token'), r'missing keys: cls_token'),
    'unknown block key': (_add(0, 'blocks.0.attn.q_norm.weight', torch.ones(16)),
                          r'unknown keys: blocks\.0\.attn\.q_norm\.weight'),
    'unknown key': (_add(0, 'dist_token', torch.zeros(1, 1, 32)), r"stage 0: unknown key 'dist_token'"),
    'stem in the last stage': (_add(2, 'pos_embed', torch.zeros(1, 17, 32)),
                               r"stage 2 holds 'pos_embed', which belongs to stage 0"),
    'qkv shape': (_narrow_qkv, r'blocks\.2\.attn\.qkv\.weight has shape \(64, 32\), expected \(96, 32\)'),
    'qkv bias missing in one block': (lambda ckpt: _stage(ckpt, 2).pop('blocks.0.attn.qkv.bias'),
                                      r'missing keys: blocks\.3\.attn\.qkv\.bias'),
    'block gap': (lambda ckpt: [_stage(ckpt, 1).pop(k) for k in list(_stage(ckpt, 1)) if k.startswith('blocks.0.')],
                  r'stage 1: block indices \[1\] are not 0\.\.0'),
    'not a tensor': (_add(2, 'norm.bias', 0.5), r'not tensors: norm\.bias'),
    'not official': (lambda ckpt: ckpt.pop('model'), r'not an official Deep Incubation checkpoint'),
}


@pytest.mark.parametrize('case', sorted(BAD_FILES))
def test_bad_file_is_refused_by_name(tmp_path, case):
    corrupt, message = BAD_FILES[case]
    checkpoint = official_checkpoint(timm_vit(4), (1, 2, 1))
    corrupt(checkpoint)
    src = save(checkpoint, tmp_path / 'official.pth')
    with pytest.raises(CheckpointError, match=message):
        convert_official(src)
    with pytest.raises(SystemExit, match=message):
        cli([str(src), str(tmp_path / 'out.pth')])
    only_file(tmp_path, 'official.pth')


@pytest.mark.parametrize('kwargs, message', [
    (dict(meta=True), r"needs the full model's module depths"),
    (dict(meta=True, module_depths=(2, 2, 2)), r'meta model of 4 modules but the module depths \[2, 2, 2\] have 3'),
    (dict(meta=True, full_depth=10), r'cannot be split into 4 equal modules'),
    (dict(module_depths=(2, 3)), r'has 4 blocks but the module depths \[2, 3\] add up to 5'),
    (dict(module_depths=(2, 2)), r'trained with modules of \[1, 1, 1, 1\] blocks, not \[2, 2\]'),
])
def test_bad_layout_is_refused(tmp_path, kwargs, message):
    src = save(official_checkpoint(timm_vit(4), (1, 1, 1, 1)), tmp_path / 'official.pth')
    with pytest.raises(CheckpointError, match=message):
        convert_official_file(src, tmp_path / 'out.pth', **kwargs)
    only_file(tmp_path, 'official.pth')


def test_full_model_is_not_a_meta_model(tmp_path):
    src = save(official_checkpoint(timm_vit(4), (2, 2)), tmp_path / 'official.pth')
    with pytest.raises(CheckpointError, match=r'is not a meta model: its stages have \[2, 2\] blocks'):
        convert_official_file(src, tmp_path / 'out.pth', meta=True, module_depths=(2, 2))


def test_output_never_overwrites_the_input(tmp_path):
    src = save(official_checkpoint(timm_vit(2), (1, 1)), tmp_path / 'official.pth')
    before = src.read_bytes()
    os.symlink(src, tmp_path / 'link.pth')
    for dst in (src, tmp_path / '.' / 'official.pth', tmp_path / 'link.pth'):
        with pytest.raises(CheckpointError, match='would overwrite the input'):
            convert_official_file(src, dst)
    assert src.read_bytes() == before


class _Opener:
    """A pickle that would create a file when unpickled by the unsafe loader."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), 'w')


def test_unsafe_pickle_is_refused_and_never_run(tmp_path):
    checkpoint = official_checkpoint(timm_vit(2), (1, 1))
    checkpoint['args'] = _Opener(tmp_path / 'pwned')
    src = save(checkpoint, tmp_path / 'official.pth')
    with pytest.raises(CheckpointError, match=r'cannot read official checkpoint .*weights_only=True'):
        convert_official(src)
    assert not (tmp_path / 'pwned').exists()
    with pytest.raises(CheckpointError, match='does not exist'):
        convert_official(tmp_path / 'missing.pth')


@pytest.mark.parametrize('dst', ['folder', 'new/', 'config'])
def test_an_output_folder_or_the_config_is_refused_before_reading(tmp_path, dst):
    src = save(official_checkpoint(timm_vit(2), (1, 1)), tmp_path / 'official.pth')
    config = tmp_path / 'config.py'
    config.write_text(DEMO.read_text())
    out = {'folder': str(tmp_path), 'new/': f'{tmp_path / "new"}/', 'config': str(config)}[dst]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    message = 'would overwrite the input' if dst == 'config' else r'is a folder, expected a file path'
    with pytest.raises(SystemExit, match=f'^error: output .*{message}'):
        cli([str(src), out, '--config', str(config)])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _plain_pickle(path: Path) -> None:
    import pickle
    path.write_bytes(pickle.dumps([1, 2], protocol=4))


FOREIGN_SOURCES = {
    'text': (lambda p: p.write_text('hello\n'), r"not written by torch\.save \(it starts with b'hello"),
    'JSON': (lambda p: p.write_text('{"model": 1}'), r'not written by torch\.save \(it starts with b\'\{"model'),
    'pickle of a list': (_plain_pickle, r'not written by torch\.save \(a plain pickle'),
    'empty': (lambda p: p.write_bytes(b''), r'the file is empty \(0 bytes\)'),
    'truncated': (lambda p: p.write_bytes(save(official_checkpoint(timm_vit(2), (1, 1)), p).read_bytes()[:4000]),
                  r'truncated, corrupt or still being written \(an incomplete zip archive\)'),
    'folder': (lambda p: p.mkdir(), r'official checkpoint .*src\.pth is a folder, expected a checkpoint file'),
    'ours': (lambda p: torch.save(dict(meta={META_KEY: dict(phase='assemble')}, state_dict={'w': torch.ones(1)}), p),
             r'found \[\'meta\', \'state_dict\'\]; it is already an mmpretrain/mmincubation checkpoint'),
}


@pytest.mark.parametrize('case', sorted(FOREIGN_SOURCES))
def test_a_foreign_source_is_refused_in_one_line(tmp_path, case):
    make, message = FOREIGN_SOURCES[case]
    src = tmp_path / 'src.pth'
    make(src)
    with pytest.raises(CheckpointError, match=message) as error:
        convert_official(src)
    assert '\n' not in str(error.value)
    with pytest.raises(SystemExit, match=message):
        cli([str(src), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


def test_a_meta_model_converted_as_a_full_model_is_told_to_pass_meta(tmp_path):
    src = save(official_checkpoint(timm_vit(4, arch=DEMO_ARCH), (1, 1, 1, 1)), tmp_path / 'meta_official.pth')
    with pytest.raises(SystemExit, match=r'missing keys: .*one block per stage, like a meta model: pass --meta'):
        cli([str(src), str(tmp_path / 'out.pth'), '--config', str(DEMO)])
    only_file(tmp_path, 'meta_official.pth')
