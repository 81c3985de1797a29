"""A pretrained network becomes the meta model: exactly its chosen blocks, computing what they compute."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import WIDTH, tiny_classifier_cfg
from mmengine.config import Config
from mmpretrain.registry import MODELS
from torch import nn

from mmincubation.checkpoint import META_KEY, CheckpointError, load_fitting, load_weights, save_atomic
from mmincubation.layout import LayoutError
from mmincubation.make_meta import build_meta_model, evenly_spaced, make_meta, pretrained_record, write_meta
from tools.make_meta import main as cli

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (3, 3, 3)  # the config's full model: 9 blocks, K = 3; its meta model has 3 blocks
SOURCE_DEPTH = 6
BLOCKS = [0, 3, 5]  # evenly spaced over 6 blocks, first and last included
SEED = 7


pytestmark = pytest.mark.usefixtures('one_thread')


def pipeline_cfg(work_dir: Path, **backbone) -> Config:
    """An incubation config of the tiny 9-block ViT, K = 3 (its meta phase builds the 3-block model)."""
    model = tiny_classifier_cfg(sum(DEPTHS))
    model['backbone'].update(backbone)
    return Config(dict(model=model, incubation=dict(module_depths=list(DEPTHS)), work_dir=str(work_dir),
                       randomness=dict(seed=SEED)))


def source_model(depth: int = SOURCE_DEPTH, num_classes: int = 3, **backbone) -> nn.Module:
    """A tiny ViT classifier with every tensor random (LayerNorm scales around 1), in eval mode."""
    cfg = tiny_classifier_cfg(depth)
    cfg['backbone'].update(backbone)
    cfg['head']['num_classes'] = num_classes
    model = MODELS.build(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if name.endswith(('ln1.weight', 'ln2.weight')) else 0.))
    return model.eval()


def write_record(folder: Path, phase: str, cost: float, wall: float, module: int | None = None, **extra) -> None:
    """The ``phase_record.json`` a finished phase leaves in its folder (only the fields cost accounting reads)."""
    record = dict(phase=phase, module=module, finished=True, cost=cost, wall_seconds=wall, history=[], **extra)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'phase_record.json').write_text(json.dumps(record))


def write_product(path: Path, phase: str, model: nn.Module) -> Path:
    """``model`` saved as ``phase``'s tagged product (layout of a 6-block model in 3 modules)."""
    return save_atomic(dict(meta={META_KEY: dict(phase=phase, layout=[2, 2, 2], holds='full')},
                            state_dict=model.state_dict()), path)


def write_e2e_product(work_dir: Path, model: nn.Module, cost: float = 3e5, wall: float = 12.5) -> Path:
    """``model`` saved as an E2E run's product, with the phase record the run writes next to it."""
    write_record(work_dir / 'e2e', 'e2e', cost, wall)
    return write_product(work_dir / 'e2e' / 'e2e.pth', 'e2e', model)


def selected_blocks(model: nn.Module, blocks: list[int]) -> nn.Module:
    """The source network with only ``blocks`` kept: what the meta model made of it must compute."""
    probe = copy.deepcopy(model)
    probe.backbone.layers = nn.ModuleList([probe.backbone.layers[b] for b in blocks])
    probe.backbone.out_indices = [len(blocks) - 1]
    return probe.eval()


def test_defaults_keep_first_and_last_block_evenly_spaced():
    assert evenly_spaced(6, 3) == BLOCKS
    assert evenly_spaced(8, 4) == [0, 2, 5, 7]
    assert evenly_spaced(32, 4) == [0, 10, 21, 31]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced(5, 1) == [0]


def test_meta_checkpoint_holds_exactly_the_chosen_blocks_and_the_source_cost(tmp_path):
    source = source_model()
    path = write_e2e_product(tmp_path / 'small', source)
    cfg = pipeline_cfg(tmp_path / 'big')
    checkpoint = make_meta(path, cfg)

    state, wanted = checkpoint['state_dict'], source.state_dict()
    assert set(state) == set(build_meta_model(cfg).state_dict())
    for key, value in state.items():
        if key.startswith('backbone.layers.'):
            k, rest = key[len('backbone.layers.'):].split('.', 1)
            origin = f'backbone.layers.{BLOCKS[int(k)]}.{rest}'
        else:  # stem, final norm, head: the source's own
            origin = key
        assert torch.equal(value, wanted[origin]), (key, origin)
    record = checkpoint['meta'][META_KEY]
    pretrained = dict(checkpoint=str(path), kind='mmincubation e2e product', weights='raw', depth=SOURCE_DEPTH,
                      blocks=BLOCKS,
                      head='reused', cost=3e5, wall_seconds=12.5,
                      cost_from=str((path.parent / 'phase_record.json').resolve()))
    assert record == dict(phase='meta', layout=list(DEPTHS), backbone='vit', stages=[sum(DEPTHS)], holds='meta',
                          inputs=dict(pretrained=hashlib.sha256(path.read_bytes()).hexdigest()), pretrained=pretrained)
    # a user-given cost wins; a product moved out of its work dir has no known cost
    assert make_meta(path, cfg, cost=1e9)['meta'][META_KEY]['pretrained']['cost'] == 1e9
    moved = save_atomic(load_weights(path), tmp_path / 'elsewhere.pth')
    assert make_meta(moved, cfg)['meta'][META_KEY]['pretrained']['cost_from'] == 'unknown'


def test_a_fine_tuned_source_costs_its_meta_model_modules_and_fine_tune(tmp_path):
    work_dir = tmp_path / 'small'
    path = write_product(work_dir / 'finetune' / 'finetuned.pth', 'finetune', source_model())
    write_record(work_dir / 'meta', 'meta', 1e4, 1.0)
    for k in range(3):
        write_record(work_dir / 'incubate' / f'module_{k}', 'incubate', 2e4, 2.0, module=k)
    # a record written before records held their own cost only: the earlier phases' cost in cost_offset
    write_record(work_dir / 'finetune', 'finetune', 7e4 + 4e4, 3.0, cost_offset=7e4)
    pretrained = make_meta(path, pipeline_cfg(tmp_path / 'big'))['meta'][META_KEY]['pretrained']
    assert (pretrained['cost'], pretrained['wall_seconds']) == (1e4 + 3 * 2e4 + 4e4, 1.0 + 3 * 2.0 + 3.0)
    (work_dir / 'incubate' / 'module_1' / 'phase_record.json').unlink()  # one module's cost unknown: all unknown
    assert make_meta(path, pipeline_cfg(tmp_path / 'big'))['meta'][META_KEY]['pretrained']['cost'] is None


@pytest.mark.parametrize('module_init', ['meta', 'scratch'])
def test_hybrids_built_from_it_compute_the_source_blocks(tmp_path, module_init):
    source = source_model()
    cfg = pipeline_cfg(tmp_path / 'big')
    meta_path = tmp_path / 'big' / 'meta' / 'meta.pth'
    write_meta(write_e2e_product(tmp_path / 'small', source), cfg, meta_path, blocks=[1, 2, 4])
    load_fitting(meta_path, build_meta_model(cfg).state_dict(), holds='meta', num_modules=len(DEPTHS))
    probe = selected_blocks(source, [1, 2, 4])
    inputs = torch.randn(4, 1, 16, 16)
    for target in range(len(DEPTHS)):
        hybrid = MODELS.build(tiny_classifier_cfg(
            len(DEPTHS) - 1 + DEPTHS[target], type='mmincubation.IncubationClassifier', module_depths=DEPTHS,
            target_module=target, meta_checkpoint=str(meta_path), module_init=module_init))
        hybrid.init_weights()
        hybrid.eval()
        if module_init == 'meta':  # grown modules: every hybrid computes the source's selected blocks
            torch.testing.assert_close(hybrid(inputs, mode='tensor'), probe(inputs, mode='tensor'))
        else:  # scratch modules: every module but the target is the source's selected block (and stem / tail)
            for module, origin in enumerate([1, 2, 4]):
                if module != target:  # the target's blocks come first in its hybrid, then one block per module
                    block = module if module < target else module + DEPTHS[target] - 1
                    torch.testing.assert_close(hybrid.backbone.layers[block].state_dict(),
                                               source.backbone.layers[origin].state_dict(), rtol=0, atol=0)
            if target != len(DEPTHS) - 1:
                torch.testing.assert_close(hybrid.head.state_dict(), source.head.state_dict(), rtol=0, atol=0)


def timm_vit(depth: int = SOURCE_DEPTH):
    """A timm ViT of the tiny config's architecture, every tensor random, in eval mode."""
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=16, patch_size=8, in_chans=1, embed_dim=WIDTH, depth=depth, num_heads=2,
                              mlp_ratio=2, num_classes=3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if 'norm' in name and name.endswith('weight') else 0.))
    return model.eval()


@pytest.mark.parametrize('wrap', ['official', 'timm', 'timm training checkpoint'])
def test_official_and_timm_checkpoints_through_the_converter(tmp_path, wrap):
    import argparse
    timm = timm_vit()
    state = timm.state_dict()
    saved = {'official': {'model': state, 'model_stages': [], 'args': argparse.Namespace(lr=1e-3)},
             'timm': state,
             'timm training checkpoint': {'state_dict': state, 'arch': 'vit', 'args': argparse.Namespace()}}[wrap]
    torch.save(saved, tmp_path / 'timm.pth')
    cfg = pipeline_cfg(tmp_path / 'big')
    checkpoint = make_meta(tmp_path / 'timm.pth', cfg)
    meta = build_meta_model(cfg).eval()
    meta.load_state_dict(checkpoint['state_dict'])
    torch.testing.assert_close(checkpoint['state_dict']['backbone.layers.1.attn.qkv.weight'],
                               state['blocks.3.attn.qkv.weight'], rtol=0, atol=0)
    timm.blocks = nn.Sequential(*[timm.blocks[b] for b in BLOCKS])
    inputs = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(meta(inputs, mode='tensor'), timm(inputs))


def test_plain_mmpretrain_classifier_and_backbone(tmp_path):
    source = source_model(num_classes=5)  # another class count: the head cannot be reused
    cfg = pipeline_cfg(tmp_path / 'big')
    torch.save(dict(state_dict=source.state_dict(), meta=dict(epoch=3)), tmp_path / 'classifier.pth')
    torch.save(source.backbone.state_dict(), tmp_path / 'backbone.pth')  # bare backbone keys, no head
    torch.manual_seed(SEED)
    fresh = MODELS.build(tiny_classifier_cfg(len(DEPTHS)))  # the config's meta model, built with its seed
    fresh.init_weights()
    for name, kind in (('classifier.pth', 'mmpretrain classifier'), ('backbone.pth', 'mmpretrain backbone (no head)')):
        checkpoint = make_meta(tmp_path / name, cfg)
        record = checkpoint['meta'][META_KEY]['pretrained']
        assert (record['kind'], record['head'], record['cost']) == (kind, 'new', None)
        state = checkpoint['state_dict']
        # the new head is the config's meta model's, built and initialised with the config's seed
        torch.testing.assert_close(state['head.layers.head.weight'], fresh.state_dict()['head.layers.head.weight'],
                                   rtol=0, atol=0)
        torch.testing.assert_close(state['backbone.layers.2.ffn.layers.1.weight'],
                                   source.state_dict()['backbone.layers.5.ffn.layers.1.weight'], rtol=0, atol=0)


def test_another_image_size_gets_its_position_embedding_resized(tmp_path):
    from mmpretrain.models.utils import resize_pos_embed
    source = source_model(img_size=32)  # 4x4 patches of 8 pixels; the config's images give 2x2
    torch.save(dict(state_dict=source.state_dict()), tmp_path / 'large.pth')
    state = make_meta(tmp_path / 'large.pth', pipeline_cfg(tmp_path / 'big'))['state_dict']
    expected = resize_pos_embed(source.backbone.pos_embed, (4, 4), (2, 2), 'bicubic', 1)
    torch.testing.assert_close(state['backbone.pos_embed'], expected)


def swin_like(path: Path) -> None:
    torch.save({'state_dict': {'backbone.patch_embed.projection.weight': torch.zeros(WIDTH, 1, 8, 8),
                               'backbone.stages.0.blocks.0.norm1.weight': torch.ones(WIDTH),
                               'head.fc.weight': torch.zeros(3, WIDTH)}}, path)


def tagged(holds: str, module: int | None = None):
    def write(path: Path) -> None:
        record = dict(phase='incubate', layout=list(DEPTHS), holds=holds)
        record.update({} if module is None else dict(module=module))
        save_atomic(dict(meta={META_KEY: record}, state_dict=source_model().state_dict()), path)
    return write


def plain(**kwargs):
    def write(path: Path) -> None:
        torch.save(dict(state_dict=source_model(**kwargs).state_dict()), path)
    return write


@pytest.mark.parametrize('write, extra, message', [
    (plain(arch=dict(embed_dims=8, num_layers=6, num_heads=2, feedforward_channels=32)), [],
     'width 8 vs the config\'s 16 (model.backbone.arch.embed_dims)'),
    (plain(patch_size=4), [], 'patch size 4x4 vs 8x8 (model.backbone.patch_size)'),
    (plain(in_channels=3), [], '3 input channels vs 1'),
    (plain(arch=dict(embed_dims=WIDTH, num_layers=6, num_heads=2, feedforward_channels=48)), [],
     'shape mismatches'),
    (swin_like, [], 'holds no VisionTransformer blocks (backbone.layers.N.*): its backbone has '
                    "['backbone.patch_embed', 'backbone.stages']"),
    (tagged('module', module=1), [], 'holds a single incubated module (module 1)'),
    (tagged('hybrid'), [], 'holds a hybrid of an unfinished module incubation'),
    (plain(arch=dict(embed_dims=WIDTH, num_layers=2, num_heads=2, feedforward_channels=32)), [],
     'has 2 blocks, fewer than the 3 the meta model needs'),
    (plain(), ['--blocks', '0', '6', '3'], 'blocks [0, 6, 3]: pretrained checkpoint'),
    (plain(), ['--blocks', '0', '4', '3'], 'must be strictly increasing'),
    (plain(), ['--blocks', '0', '3'], 'expected 3 block indices'),
], ids=['width', 'patch', 'channels', 'ffn', 'kind', 'module', 'hybrid', 'shallow', 'range', 'order', 'count'])
def test_a_source_that_does_not_fit_is_refused_in_one_line_and_nothing_is_written(tmp_path, write, extra, message):
    config = tmp_path / 'config.py'
    pipeline_cfg(tmp_path / 'big').dump(config)
    source = tmp_path / 'source.pth'
    write(source)
    meta_dir = tmp_path / 'big' / 'meta'
    meta_dir.mkdir(parents=True)
    with pytest.raises(SystemExit) as error:
        cli([str(source), str(config), *extra])
    text = str(error.value)
    assert text.startswith('error: ') and '\n' not in text and message in text and str(source) in text, text
    assert list(meta_dir.iterdir()) == []  # no meta.pth, no temporary file left


def test_a_config_whose_blocks_depend_on_their_place_is_refused(tmp_path, load):
    cfg = load(ROOT / 'configs' / 'incubate_demo_fashion_mnist_swin.py')
    source = write_e2e_product(tmp_path / 'small', source_model())
    with pytest.raises(LayoutError, match='made of backbones whose blocks do not depend on their place; the '
                                          'config\'s model.backbone SwinTransformer shifts its windows'):
        write_meta(source, cfg, tmp_path / 'meta.pth')
    assert not (tmp_path / 'meta.pth').exists()


def test_command_line_writes_where_the_pipeline_looks_and_refuses_its_input_as_output(tmp_path, capsys):
    config = tmp_path / 'config.py'
    pipeline_cfg(tmp_path / 'big').dump(config)
    source = write_e2e_product(tmp_path / 'small', source_model())
    record = cli([str(source), str(config), '--blocks', '0', '1', '5'])
    out = tmp_path / 'big' / 'meta' / 'meta.pth'
    printed = capsys.readouterr().out
    assert f'from blocks [0, 1, 5] of 6 of {source}' in printed and 'head reused' in printed
    assert 'pretraining cost: 0.3 M block-images' in printed
    assert pretrained_record(out) == record['pretrained']
    with pytest.raises(SystemExit, match=re.escape(f'error: output {source} would overwrite the input')):
        cli([str(source), str(config), '--out', str(source)])


def run_make_meta(*args: str | Path) -> subprocess.CompletedProcess:
    """``python tools/make_meta.py ARGS`` in a fresh process, as a user runs it (one torch thread)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_meta.py'), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def with_mmcv_ema(model: nn.Module, path: Path, foreign: bool = True) -> dict[str, torch.Tensor]:
    """``model``'s weights plus an mmcv-1.x EMAHook buffer ``ema_<key, '.' as '_'>`` of each (0.5 x the weight,
    to tell them apart) and, with ``foreign``, a key of neither kind, saved untagged to ``path``; returns the
    state dict written."""
    state = model.state_dict()
    state.update({'ema_' + key.replace('.', '_'): value * 0.5 for key, value in model.state_dict().items()})
    if foreign:
        state['teacher.fc.weight'] = torch.zeros(3, WIDTH)
    torch.save(dict(state_dict=state, meta={}), path)
    return state


def meta_origin(key: str, blocks: list[int] = BLOCKS) -> str:
    """The source key a meta model's key was copied from (its blocks are the source's ``blocks``)."""
    if not key.startswith('backbone.layers.'):
        return key
    k, rest = key[len('backbone.layers.'):].split('.', 1)
    return f'backbone.layers.{blocks[int(k)]}.{rest}'


def test_mmcv_ema_buffers_keep_the_head_and_are_named_unless_used_with_ema(tmp_path):
    """Case make-meta-ema-buffers-discard-head: the head that fits is kept; the EMA copies are named and
    ignored by default, used with --ema; a foreign key is named, never taken for the head."""
    config = tmp_path / 'config.py'
    pipeline_cfg(tmp_path / 'big').dump(config)
    source = tmp_path / 'ema_buffers.pth'
    state = with_mmcv_ema(source_model(), source)
    for flag, weights, scale in (([], 'raw', 1.0), (['--ema'], 'ema', 0.5)):
        out = tmp_path / f'meta_{weights}.pth'
        result = run_make_meta(source, config, '--out', out, *flag)
        assert result.returncode == 0, result.stderr
        log = result.stdout + result.stderr
        used = 'used instead of the raw weights' if flag else \
            'ignored, the raw weights are used (--ema, make_meta(ema=True), uses them)'
        assert f'pretrained checkpoint {source} holds {len(state) // 2} EMA copies (mmcv 1.x EMAHook ema_* buffers): '\
               f'{used}' in log, log
        assert f'pretrained checkpoint {source}: 1 foreign keys (neither backbone, neck or head weights nor EMA ' \
               'copies of them) left unused: teacher.fc.weight' in log, log
        assert f'(mmpretrain classifier, {weights} weights), head reused' in result.stdout
        checkpoint = load_weights(out)
        assert checkpoint['meta'][META_KEY]['pretrained']['weights'] == weights
        for key, value in checkpoint['state_dict'].items():  # stem, blocks, final norm and head alike
            torch.testing.assert_close(value, state[meta_origin(key)] * scale, rtol=0, atol=0, msg=key)


def test_mmengine_ema_checkpoint_raw_weights_by_default_averaged_with_ema(tmp_path):
    """MMEngine's EMAHook swaps before saving: ``state_dict`` holds the averaged weights, ``ema_state_dict``
    the raw ones (``module.``) beside its ``steps`` counter."""
    model = source_model()
    raw = model.state_dict()
    averaged = {key: value * 0.5 for key, value in raw.items()}
    ema_state = {'steps': torch.tensor(7), **{f'module.{key}': value for key, value in raw.items()}}
    torch.save(dict(state_dict=averaged, ema_state_dict=ema_state, meta=dict(epoch=3)), tmp_path / 'epoch_3.pth')
    cfg = pipeline_cfg(tmp_path / 'big')
    for ema, expected in ((False, raw), (True, averaged)):
        checkpoint = make_meta(tmp_path / 'epoch_3.pth', cfg, ema=ema)
        pretrained = checkpoint['meta'][META_KEY]['pretrained']
        assert (pretrained['weights'], pretrained['head']) == ('ema' if ema else 'raw', 'reused')
        for key, value in checkpoint['state_dict'].items():
            torch.testing.assert_close(value, expected[meta_origin(key)], rtol=0, atol=0, msg=key)


def test_ema_asked_of_a_source_without_copies_is_refused(tmp_path):
    torch.save(dict(state_dict=source_model().state_dict()), tmp_path / 'plain.pth')
    with pytest.raises(CheckpointError, match=re.escape(
            f'pretrained checkpoint {tmp_path / "plain.pth"} (mmpretrain classifier) holds no EMA copies of its '
            'weights (neither mmcv 1.x ema_* buffers nor an MMEngine ema_state_dict); use its weights (no --ema)')):
        make_meta(tmp_path / 'plain.pth', pipeline_cfg(tmp_path / 'big'), ema=True)


def test_an_existing_output_is_never_replaced(tmp_path):
    """Case make-meta-overwrites-trained-meta: a trained meta model at the default output (or any existing
    --out) is refused in one line before the source is read (here a file that is no checkpoint at all)."""
    config = tmp_path / 'config.py'
    pipeline_cfg(tmp_path / 'big').dump(config)
    trained = tmp_path / 'big' / 'meta' / 'meta.pth'
    write_product(trained, 'meta', source_model(depth=len(DEPTHS)))
    before = md5(trained)
    source = tmp_path / 'not_read.pth'
    source.write_bytes(b'not a checkpoint')
    result = run_make_meta(source, config)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: output {trained} already exists; nothing written: no file is replaced (later phases may have been '
        'made from it): choose another output path, or move it away first'), result.stderr
    assert md5(trained) == before and sorted(p.name for p in trained.parent.iterdir()) == ['meta.pth']
    other = tmp_path / 'other.pth'
    other.write_bytes(b'some file')
    with pytest.raises(SystemExit, match=re.escape(f'error: output {other} already exists; nothing written')):
        cli([str(source), str(config), '--out', str(other)])
    assert other.read_bytes() == b'some file'


def test_a_source_with_non_finite_tensors_used_is_refused(tmp_path):
    """Case nan-loss-products-exported: a diverged (NaN) source is refused, naming the file; NaN only in the
    EMA copies left unused is not in the way, and refused when they are used."""
    config = tmp_path / 'config.py'
    pipeline_cfg(tmp_path / 'big').dump(config)
    model = source_model()
    with torch.no_grad():
        model.head.layers.head.weight[0, 0] = float('nan')
    diverged = write_e2e_product(tmp_path / 'small', model)
    out = tmp_path / 'meta.pth'
    result = run_make_meta(diverged, config, '--out', out)
    assert result.returncode != 0 and not out.exists()
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: pretrained checkpoint {diverged} holds non-finite weights (NaN or Inf) in 1 of '
        f'{len(model.state_dict())} tensors (head.layers.head.weight): the run that wrote it diverged; lower the '
        'learning rate and retrain that phase'), result.stderr

    state = with_mmcv_ema(source_model(), tmp_path / 'ema.pth', foreign=False)
    state['ema_backbone_cls_token'][0, 0, 0] = float('inf')
    torch.save(dict(state_dict=state), tmp_path / 'ema.pth')
    cfg = pipeline_cfg(tmp_path / 'big')
    assert make_meta(tmp_path / 'ema.pth', cfg)['meta'][META_KEY]['pretrained']['weights'] == 'raw'
    with pytest.raises(CheckpointError, match=r'ema\.pth holds non-finite weights .* \(backbone\.cls_token\)'):
        make_meta(tmp_path / 'ema.pth', cfg, ema=True)
