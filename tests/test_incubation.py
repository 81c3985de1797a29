"""Module incubation, export and assembly do what the method says (and refuse what it forbids)."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_classifier_cfg
from mmengine.optim import build_optim_wrapper
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

from mmincubation.assemble import assemble, assemble_modules
from mmincubation.backbones import VIT
from mmincubation.checkpoint import META_KEY, CheckpointError, save_atomic
from mmincubation.layout import LayoutError, ModuleLayout

DEPTHS = (2, 2, 2)  # K = 3 modules of 2 blocks: a 6-block "full" model
FULL = ModuleLayout(DEPTHS, VIT.naming)


def save_meta_checkpoint(path, seed: int = 1) -> dict:
    torch.manual_seed(seed)
    meta = MODELS.build(tiny_classifier_cfg(FULL.num_modules))
    meta.init_weights()
    state = {k: v.clone() for k, v in meta.state_dict().items()}
    save_atomic(dict(meta={META_KEY: dict(phase='meta', layout=list(DEPTHS))}, state_dict=state), path)
    return state


def build_hybrid(target: int, meta_checkpoint=None):
    hybrid = MODELS.build(tiny_classifier_cfg(
        FULL.hybrid(target).total_depth, type='mmincubation.IncubationClassifier',
        module_depths=DEPTHS, target_module=target, meta_checkpoint=meta_checkpoint and str(meta_checkpoint)))
    hybrid.init_weights()
    return hybrid


def snapshot(model) -> dict:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def train_step(model, steps: int = 3):
    from mmpretrain.structures import DataSample
    optim_wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05)))
    samples = [DataSample().set_gt_label(i % 3) for i in range(6)]
    for _ in range(steps):
        losses = model(torch.randn(6, 1, 16, 16), samples, mode='loss')
        optim_wrapper.update_params(sum(losses.values()))
    return optim_wrapper


def test_hybrid_takes_meta_modules_and_keeps_its_own_target_init(tmp_path):
    meta = save_meta_checkpoint(tmp_path / 'meta.pth')
    hybrid = build_hybrid(1, tmp_path / 'meta.pth')  # layout (1, 2, 1): blocks 0 | 1 2 | 3
    state = hybrid.state_dict()
    torch.testing.assert_close(state['backbone.patch_embed.projection.weight'],
                               meta['backbone.patch_embed.projection.weight'])
    torch.testing.assert_close(state['backbone.layers.0.attn.qkv.weight'], meta['backbone.layers.0.attn.qkv.weight'])
    torch.testing.assert_close(state['backbone.layers.3.attn.qkv.weight'], meta['backbone.layers.2.attn.qkv.weight'])
    torch.testing.assert_close(state['head.layers.head.weight'], meta['head.layers.head.weight'])
    # The target's blocks are freshly initialised, not copied from the meta model's block 1.
    assert not torch.equal(state['backbone.layers.1.attn.qkv.weight'], meta['backbone.layers.1.attn.qkv.weight'])


@pytest.mark.parametrize('target', [0, 1, 2])
def test_incubation_step_trains_only_the_target_module(tmp_path, target):
    save_meta_checkpoint(tmp_path / 'meta.pth')
    hybrid = build_hybrid(target, tmp_path / 'meta.pth')
    layout = FULL.hybrid(target)
    before = snapshot(hybrid)
    optim_wrapper = train_step(hybrid)
    # MMEngine's default constructor hands the frozen parameters to AdamW too; AdamW skips a parameter
    # without gradient (no state, no weight decay), so only the target's parameters have optimizer state.
    optimized = {id(p) for p in optim_wrapper.optimizer.state}
    for name, param in hybrid.named_parameters():
        module = layout.module_of(name)
        if module == target:
            assert id(param) in optimized, name
            assert not torch.equal(param, before[name]), f'target parameter {name} did not move'
        else:  # meta prefix (module < target) and meta suffix (module > target) alike
            assert id(param) not in optimized and param.grad is None, name
            torch.testing.assert_close(param, before[name], rtol=0, atol=0, msg=f'meta parameter {name} moved')


def test_target_gradient_flows_back_through_the_meta_suffix(tmp_path):
    from mmpretrain.structures import DataSample
    save_meta_checkpoint(tmp_path / 'meta.pth')
    hybrid = build_hybrid(0, tmp_path / 'meta.pth')  # target first: modules 1 and 2 are the suffix
    inputs, samples = torch.randn(4, 1, 16, 16), [DataSample().set_gt_label(i % 3) for i in range(4)]

    def target_grad() -> torch.Tensor:
        hybrid.zero_grad()
        sum(hybrid(inputs, samples, mode='loss').values()).backward()
        return hybrid.backbone.layers[0].attn.qkv.weight.grad.clone()

    grad = target_grad()
    assert grad.abs().sum() > 0
    with torch.no_grad():  # change only a suffix (meta) block: the target's gradient must change
        hybrid.backbone.layers[2].ffn.layers[1].weight.mul_(-1)
    assert not torch.allclose(target_grad(), grad)


def export_trained_modules(tmp_path) -> tuple[list, list]:
    save_meta_checkpoint(tmp_path / 'meta.pth')
    files, hybrids = [], []
    for target in range(FULL.num_modules):
        hybrid = build_hybrid(target, tmp_path / 'meta.pth')
        train_step(hybrid, steps=1)
        record = dict(phase='incubate', layout=list(DEPTHS), module=target)
        files.append(save_atomic(dict(meta={META_KEY: record}, state_dict=hybrid.export_module()),
                                 tmp_path / f'module_{target}.pth'))
        hybrids.append(hybrid)
    return files, hybrids


def test_assembled_checkpoint_is_a_plain_mmpretrain_model(tmp_path):
    files, hybrids = export_trained_modules(tmp_path)
    full = MODELS.build(tiny_classifier_cfg(FULL.total_depth))
    out = assemble(files, tmp_path / 'assembled.pth', reference=full.state_dict())
    load_checkpoint(full, str(out), strict=True)  # exactly the stock keys, nothing missing or extra

    # Reference assembly by hand: module k's blocks sit at offset sum(depths[:k]) in the full model,
    # and at offset k in hybrid k (one meta block before it per earlier module).
    expected = MODELS.build(tiny_classifier_cfg(FULL.total_depth))
    with torch.no_grad():
        for k, hybrid in enumerate(hybrids):
            for local in range(DEPTHS[k]):
                expected.backbone.layers[sum(DEPTHS[:k]) + local].load_state_dict(
                    hybrid.backbone.layers[k + local].state_dict())
        expected.backbone.patch_embed.load_state_dict(hybrids[0].backbone.patch_embed.state_dict())
        expected.backbone.cls_token.copy_(hybrids[0].backbone.cls_token)
        expected.backbone.pos_embed.copy_(hybrids[0].backbone.pos_embed)
        expected.backbone.ln1.load_state_dict(hybrids[-1].backbone.ln1.state_dict())
        expected.head.load_state_dict(hybrids[-1].head.state_dict())
    full.eval(), expected.eval()
    inputs = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(full(inputs, mode='tensor'), expected(inputs, mode='tensor'))


def test_assembly_refuses_incomplete_or_foreign_modules_and_writes_nothing(tmp_path):
    files, _ = export_trained_modules(tmp_path)
    out = tmp_path / 'assembled.pth'
    previous = tmp_path / 'previous.pth'
    previous.write_bytes(b'previous result')
    with pytest.raises(CheckpointError, match=r'previous.pth already exists; nothing written'):
        assemble(files, previous)  # never replaced: later phases may have been made from it
    assert previous.read_bytes() == b'previous result'
    with pytest.raises(CheckpointError, match=r'modules \[2\] .* missing'):
        assemble(files[:2], out)
    with pytest.raises(CheckpointError, match='module 1 is given twice'):
        assemble([files[0], files[1], files[1]], out)
    with pytest.raises(CheckpointError, match='output of the "meta" phase, expected .*"incubate"'):
        assemble([tmp_path / 'meta.pth', *files[1:]], out)
    # A module incubated for another model (K=3 but other depths).
    other = torch.load(files[2], weights_only=True)
    other['meta'][META_KEY]['layout'] = [2, 2, 3]
    save_atomic(other, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match=r'incubated for a vit backbone, layout \(2, 2, 3\)'):
        assemble([*files[:2], tmp_path / 'other.pth'], out)
    # The right modules, but for a wider model than the config's.
    wider = MODELS.build(tiny_classifier_cfg(6))
    reference = {k: torch.zeros(*v.shape[:-1], v.shape[-1] * 2) if v.dim() else v
                 for k, v in wider.state_dict().items()}
    with pytest.raises(LayoutError, match='shape mismatches'):
        assemble(files, out, reference=reference)
    with pytest.raises(CheckpointError, match='does not exist'):
        assemble([*files[:2], tmp_path / 'nowhere.pth'], out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []  # no temp files left
    assert set(assemble_modules(files)['state_dict']) == set(MODELS.build(tiny_classifier_cfg(6)).state_dict())


def test_hybrid_refuses_a_meta_checkpoint_of_another_model(tmp_path):
    save_meta_checkpoint(tmp_path / 'meta.pth')
    checkpoint = torch.load(tmp_path / 'meta.pth', weights_only=True)
    checkpoint['meta'][META_KEY]['layout'] = [3, 3]
    save_atomic(checkpoint, tmp_path / 'meta_k2.pth')
    with pytest.raises(CheckpointError, match='has 2 modules, the config asks for 3'):
        build_hybrid(1, tmp_path / 'meta_k2.pth')
    # Same K, other width: named as a shape mismatch of the file.
    torch.manual_seed(0)
    wide = MODELS.build(tiny_classifier_cfg(3))
    state = {k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.dim() else v for k, v in wide.state_dict().items()}
    checkpoint['meta'][META_KEY]['layout'] = list(DEPTHS)
    save_atomic(dict(meta=checkpoint['meta'], state_dict=state), tmp_path / 'meta_wide.pth')
    with pytest.raises(LayoutError, match='meta checkpoint .*meta_wide.pth does not fit the model: shape'):
        build_hybrid(1, tmp_path / 'meta_wide.pth')
    with pytest.raises(LayoutError, match=r'backbone has stages of \[3\] blocks but the hybrid for module 1'):
        MODELS.build(tiny_classifier_cfg(3, type='mmincubation.IncubationClassifier', module_depths=DEPTHS,
                                         target_module=1))


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    save_atomic(dict(state_dict={'w': torch.ones(2)}), path)

    def failing_save(obj, f):
        f.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        save_atomic(dict(state_dict={'w': torch.zeros(2)}), path)
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path, weights_only=True)['state_dict']['w'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ['ckpt.pth']


def grown_hybrid(target: int, meta_checkpoint):
    hybrid = MODELS.build(tiny_classifier_cfg(
        FULL.hybrid(target).total_depth, type='mmincubation.IncubationClassifier', module_depths=DEPTHS,
        target_module=target, meta_checkpoint=str(meta_checkpoint), module_init='meta'))
    hybrid.init_weights()
    return hybrid.eval()


def test_modules_grown_from_the_meta_model_keep_its_function_in_every_hybrid_and_the_assembly(tmp_path):
    meta_state = save_meta_checkpoint(tmp_path / 'meta.pth')
    meta = MODELS.build(tiny_classifier_cfg(FULL.num_modules)).eval()
    meta.load_state_dict(meta_state)
    images = torch.randn(5, 1, 16, 16)
    expected = meta(images, mode='tensor')
    modules = []
    for target in range(FULL.num_modules):
        hybrid = grown_hybrid(target, tmp_path / 'meta.pth')
        torch.testing.assert_close(hybrid(images, mode='tensor'), expected, rtol=0, atol=1e-6)
        state = hybrid.state_dict()
        second = FULL.hybrid(target).blocks_of(target)[1]
        assert not state[f'backbone.layers.{second}.attn.proj.weight'].any()  # an identity block ...
        assert state[f'backbone.layers.{second}.attn.qkv.weight'].std() > 0  # ... with fresh weights elsewhere
        save_atomic(dict(meta={META_KEY: dict(phase='incubate', layout=list(DEPTHS), module=target)},
                         state_dict=hybrid.export_module()), tmp_path / f'module_{target}.pth')
        modules.append(tmp_path / f'module_{target}.pth')
    full = MODELS.build(tiny_classifier_cfg(FULL.total_depth)).eval()
    full.load_state_dict(assemble_modules(modules)['state_dict'], strict=True)
    torch.testing.assert_close(full(images, mode='tensor'), expected, rtol=0, atol=1e-6)


def test_grown_module_is_the_only_part_that_trains(tmp_path):
    save_meta_checkpoint(tmp_path / 'meta.pth')
    hybrid = grown_hybrid(1, tmp_path / 'meta.pth').train()
    before = snapshot(hybrid)
    train_step(hybrid)
    moved = {name for name, value in snapshot(hybrid).items() if not torch.equal(value, before[name])}
    target = {name for name in before if FULL.hybrid(1).module_of(name) == 1}
    assert moved == target  # the zeroed residual outputs move too: the identity blocks start learning


def test_growing_a_module_needs_a_meta_model_and_a_known_mode():
    with pytest.raises(LayoutError, match="module_init='meta' grows the module from the meta model"):
        MODELS.build(tiny_classifier_cfg(4, type='mmincubation.IncubationClassifier', module_depths=DEPTHS,
                                         target_module=1, module_init='meta')).init_weights()
    with pytest.raises(LayoutError, match=r"module_init must be one of \('scratch', 'meta'\), got 'grown'"):
        MODELS.build(tiny_classifier_cfg(4, type='mmincubation.IncubationClassifier', module_depths=DEPTHS,
                                         target_module=1, module_init='grown'))
