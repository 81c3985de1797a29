"""What a user does across processes: rerun a killed pipeline, load its files, evaluate the wrong file.

Every test here runs the tools as separate processes, because the bugs they guard against lived in
process state (a safe-loading allow-list filled only after training had started in the same process).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_pipeline

from mmincubation.checkpoint import META_KEY, save_atomic
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from tools.test import main as evaluate

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = ('meta/meta.pth', 'incubate/module_0/module_0.pth', 'incubate/module_1/module_1.pth', 'assembled.pth',
            'finetune/finetuned.pth', 'e2e/e2e.pth')
PHASE_DIRS = ('meta', 'incubate/module_0', 'incubate/module_1', 'finetune', 'e2e')
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')

# The tiny pipeline (conftest.TINY_PIPELINE) at 2 epochs of 4 iterations per phase, drop path on (so resuming
# must restore the random streams too).

# Same pipeline, but each phase SIGKILLs its own process once, at its 6th iteration (in epoch 2,
# after epoch 1's checkpoint was written), as a preempted or OOM-killed job dies.
KILLED = '''
_base_ = ['./tiny.py']
custom_imports = dict(imports=['sigkill_once_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='SigkillOnceHook', at_iter=6)]
'''


def run_tool(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python tools/<args>`` in a fresh process (tests/ on the path, for the kill hook)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def pipelines(tmp_path_factory, data_root) -> dict[str, Path]:
    """The tiny pipeline run once uninterrupted and once killed in every phase and rerun until done."""
    configs = tmp_path_factory.mktemp('configs')
    (configs / 'tiny.py').write_text(tiny_pipeline(data_root, indices=128, epochs=2, drop_path=0.1))
    (configs / 'tiny_killed.py').write_text(KILLED)
    work = tmp_path_factory.mktemp('work')
    reference = run_tool('tools/train.py', str(configs / 'tiny.py'), '--phase', 'all', '--work-dir',
                         str(work / 'reference'))
    assert reference.returncode == 0, reference.stderr[-3000:]

    command = ('tools/train.py', str(configs / 'tiny_killed.py'), '--phase', 'all', '--work-dir',
               str(work / 'killed'))
    kills = 0
    while (result := run_tool(*command)).returncode == -signal.SIGKILL:
        kills += 1
        assert kills <= len(PHASE_DIRS), 'a phase was killed twice'
    assert result.returncode == 0, result.stderr[-3000:]
    assert kills == len(PHASE_DIRS)  # every phase died once and was resumed by the same command
    return dict(reference=work / 'reference', killed=work / 'killed', configs=configs)


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


@needs_data
def test_a_pipeline_killed_in_every_phase_and_rerun_ends_with_identical_products(pipelines):
    for phase_dir in PHASE_DIRS:  # each really was killed and resumed, not restarted from scratch
        assert (pipelines['killed'] / phase_dir / '.killed_once').is_file(), phase_dir
        log = next((pipelines['killed'] / phase_dir).rglob('*.log')).read_text()
        assert 'resumed epoch: 1, iter: 4' in ''.join(p.read_text() for p in (pipelines['killed'] / phase_dir)
                                                       .rglob('*.log')), log[-500:]
    for product in PRODUCTS:  # bit-identical weights: CPU training is deterministic once resumed exactly
        reference, resumed = state_dict(pipelines['reference'] / product), state_dict(pipelines['killed'] / product)
        assert reference.keys() == resumed.keys(), product
        different = [key for key in reference if not torch.equal(reference[key], resumed[key])]
        assert not different, f'{product}: {different[:5]}'
    for phase_dir in PHASE_DIRS:  # the records keep the evaluations made before the kill
        records = [json.loads((pipelines[run] / phase_dir / 'phase_record.json').read_text())
                   for run in ('reference', 'killed')]
        assert [h['epoch'] for h in records[1]['history']] == [h['epoch'] for h in records[0]['history']] == [1, 2]
        assert records[1]['history'] == records[0]['history'] and records[1]['iters'] == records[0]['iters'] == 8
        assert records[1]['test_metrics'] == records[0]['test_metrics']


LOAD_EVERYTHING = '''
import sys, torch
import mmincubation  # noqa: F401  (the safe-loading allow-list: nothing trained in this process)
from mmpretrain.models import VisionTransformer
files = sys.argv[2:]
for path in files:
    torch.load(path, map_location='cpu')  # torch's default: weights_only=True
# A downstream backbone initialised from an intermediate checkpoint, as init_cfg Pretrained does.
backbone = VisionTransformer(arch=dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64),
                             img_size=28, patch_size=4, in_channels=1,
                             init_cfg=dict(type='Pretrained', checkpoint=sys.argv[1], prefix='backbone.'))
backbone.init_weights()
saved = torch.load(sys.argv[1], map_location='cpu')['state_dict']
assert torch.equal(backbone.layers[3].ffn.layers[1].weight, saved['backbone.layers.3.ffn.layers.1.weight'])
print('loaded', len(files))
'''


@needs_data
def test_every_file_the_pipeline_writes_loads_safely_in_a_fresh_process(pipelines, tmp_path):
    files = sorted(str(path) for path in pipelines['killed'].rglob('*.pth'))
    assert any(path.endswith('epoch_2.pth') for path in files) and len(files) >= len(PRODUCTS) + len(PHASE_DIRS)
    script = tmp_path / 'load_everything.py'
    script.write_text(LOAD_EVERYTHING)
    result = run_tool(str(script), str(pipelines['killed'] / 'e2e' / 'epoch_2.pth'), *files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'loaded {len(files)}' in result.stdout

    # tools/test.py scores an intermediate checkpoint of the full model in a new process.
    result = run_tool('tools/test.py', str(pipelines['configs'] / 'tiny.py'),
                      str(pipelines['killed'] / 'e2e' / 'epoch_2.pth'), '--work-dir', str(tmp_path / 'test'))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((pipelines['killed'] / 'e2e' / 'phase_record.json').read_text())
    assert f'accuracy/top1: {record["test_metrics"]["accuracy/top1"]:.4f}' in result.stdout + result.stderr


def widened(src: Path, dst: Path) -> Path:
    """``src``'s product as the same config at width 48 would write it (zero weights, the same tag)."""
    checkpoint = torch.load(src, weights_only=True)
    wide = {key: torch.zeros([48 if size == 32 else size for size in value.shape])
            for key, value in checkpoint['state_dict'].items()}
    return save_atomic(dict(meta=checkpoint['meta'], state_dict=wide), dst)


@needs_data
def test_test_tool_refuses_checkpoints_that_do_not_fit_and_scores_those_that_do(pipelines, tmp_path):
    config, ref = str(pipelines['configs'] / 'tiny.py'), pipelines['reference']
    refused = [
        ([str(ref / 'incubate/module_1/module_1.pth')], r'holds a single incubated module \(module 1\).*assemble'),
        ([str(ref / 'meta/meta.pth')], 'holds a meta model.*expected the full model.*--phase meta'),
        ([str(ref / 'incubate/module_0/epoch_2.pth')], 'holds a hybrid network.*module 0'),
        ([str(ref / 'finetune/finetuned.pth'), '--phase', 'meta'], 'holds the full model.*expected a meta model'),
        ([str(widened(ref / 'meta/meta.pth', tmp_path / 'meta_width48.pth')), '--phase', 'meta'],
         r'meta_width48.pth does not fit the model: shape mismatches.*\(1, 1, 48\) vs expected \(1, 1, 32\)'),
        ([str(tmp_path)], 'is a folder, expected a checkpoint file'),
    ]
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes((ref / 'finetune/finetuned.pth').read_bytes()[:5000])
    refused.append(([str(truncated)], 'cannot read checkpoint .*truncated.pth: truncated, corrupt'))
    for args, message in refused:  # files written by the pipeline's processes, judged in this one
        with pytest.raises(SystemExit, match=r'^error: (?s:.*)' + message):
            evaluate([config, *args, '--work-dir', str(tmp_path / 'test')])
    assert not (tmp_path / 'test').exists()  # refused before any runner started
    metrics = evaluate([config, str(ref / 'meta/meta.pth'), '--phase', 'meta', '--work-dir', str(tmp_path / 'test')])
    record = json.loads((ref / 'meta/phase_record.json').read_text())
    assert metrics['accuracy/top1'] == pytest.approx(record['history'][-1]['metrics']['accuracy/top1'])


def converted_official(pipelines, tmp_path, num_blocks: int) -> Path:
    """An assembled.pth converted from an official-format model of another depth (untagged keys fit otherwise)."""
    finetuned = torch.load(pipelines['reference'] / 'finetune/finetuned.pth', weights_only=True)['state_dict']
    shallower = {key: value for key, value in finetuned.items()
                 if not key.startswith(tuple(f'backbone.layers.{i}.' for i in range(num_blocks, 4)))}
    return save_atomic(dict(meta={META_KEY: dict(phase='assemble', layout=[num_blocks])}, state_dict=shallower),
                       tmp_path / 'work' / 'assembled.pth')


@needs_data
@pytest.mark.parametrize('make, message', [
    (lambda pipelines, tmp_path: converted_official(pipelines, tmp_path, num_blocks=3),
     r'assembled.pth does not fit this config \(vit layout \(3,\) vs vit layout \(2, 2\)\)'),
    (lambda pipelines, tmp_path: widened(pipelines['reference'] / 'assembled.pth', tmp_path / 'work/assembled.pth'),
     r'assembled.pth does not fit the model: shape mismatches .*\(1, 1, 48\) vs expected \(1, 1, 32\)'),
], ids=['official-3-blocks', 'width-48'])
def test_finetune_refuses_an_assembled_model_that_does_not_fit_and_writes_nothing(pipelines, tmp_path, make, message):
    make(pipelines, tmp_path)
    before = sorted(tmp_path.rglob('*'))
    result = run_tool('tools/train.py', str(pipelines['configs'] / 'tiny.py'), '--phase', 'finetune',
                      '--work-dir', str(tmp_path / 'work'))
    assert result.returncode != 0
    assert re.search(message, result.stderr.splitlines()[-1]), result.stderr[-2000:]
    assert sorted(tmp_path.rglob('*')) == before  # no run dir, no record, no finetuned.pth


@needs_data
def test_vit_products_are_those_of_the_code_before_backbone_adapters(pipelines):
    """Backbone adapters (Swin) changed how layouts key blocks; ViT products must not change.

    ``data/vit_tiny_pipeline_products.json`` holds, per product of this tiny pipeline as the code before
    the adapters wrote it, every key with its shape, sum and absolute sum (float64). Keys and shapes must
    be equal; sums may differ only by floating-point noise across CPUs (a block in the wrong place, a
    module missing a parameter or a changed initialisation move them by orders of magnitude more).
    """
    stored = json.loads((Path(__file__).parent / 'data' / 'vit_tiny_pipeline_products.json').read_text())
    for product, tensors in stored.items():
        state = torch.load(pipelines['reference'] / product, weights_only=True)['state_dict']
        assert list(state) == list(tensors), product
        for key, (shape, total, absolute) in tensors.items():
            value = state[key].double()
            assert list(value.shape) == shape, (product, key)
            assert float(value.sum()) == pytest.approx(total, rel=1e-4, abs=1e-4), (product, key)
            assert float(value.abs().sum()) == pytest.approx(absolute, rel=1e-4, abs=1e-4), (product, key)
