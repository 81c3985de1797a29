"""Phase state, as a user meets it across processes: a finished phase must fit the config, one writer per phase,
non-finite runs stop, EMA products are the evaluated weights, a broken last_checkpoint does not brick the rerun,
settings that would make a resume inexact are refused.

Each handed case of the issue (../shared/cases/<name>) is a test here, running tools/train.py in fresh processes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_pipeline
from mmengine.config import Config

from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.runner.phase_config import RecipeError, check_resumable, phase_recipe, recipe_fingerprint
from mmincubation.engine.runner.phase_lock import STALE_AFTER, PhaseLock, PhaseLocked
from mmincubation.engine.runner.records import load_records, method_results
from mmincubation.phases import PHASE_TABLE, Phase, all_phases
from mmincubation.tags import Tag

ROOT = Path(__file__).resolve().parents[1]
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')

# The cases' tiny pipeline (../shared/cases/tiny_case.py): 1 epoch of 8 iterations per phase, no drop path.
EMA = "_base_ = ['./tiny.py']\ncustom_hooks = [dict(type='EMAHook', momentum=0.2, priority='ABOVE_NORMAL')]\n"
EMA_2_EPOCHS = "_base_ = ['./ema.py']\nincubation = dict(e2e=dict(train_cfg=dict(max_epochs=2)))\n"
EMA_KILLED = """_base_ = ['./ema_2_epochs.py']
custom_imports = dict(imports=['sigkill_once_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='EMAHook', momentum=0.2, priority='ABOVE_NORMAL'), dict(type='SigkillOnceHook', at_iter=11)]
"""
ITER_CHECKPOINTS = ("_base_ = ['./tiny.py']\ndefault_hooks = dict(checkpoint=dict(type='CheckpointHook', "
                    "by_epoch=False, interval=4))\n")
PERSISTENT = "_base_ = ['./tiny.py']\ntrain_dataloader = dict(num_workers=2, persistent_workers=True)\n"
# An iteration-based E2E phase with iteration checkpoints, a random flip and persistent workers: resumable exactly.
ITER_BASED = """_base_ = ['./tiny.py']
train_pipeline = [dict(type='RandomFlip', prob=0.5, direction='horizontal'), dict(type='PackInputs')]
train_dataloader = dict(num_workers=2, persistent_workers=True, dataset=dict(pipeline=train_pipeline))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=2))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=16, val_interval=8)
incubation = dict(_delete_=True, num_modules=2, e2e=dict(model=dict(backbone=dict(drop_path_rate=0.1))))
"""
ITER_BASED_KILLED = """_base_ = ['./iter_based.py']
custom_imports = dict(imports=['sigkill_once_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='SigkillOnceHook', at_iter=6)]
"""
PRODUCTS = all_phases(2)


def train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python tools/train.py ARGS`` in a fresh process; its log and errors in ``stdout``."""
    return subprocess.run([sys.executable, 'tools/train.py', *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')])))


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def configs(tmp_path_factory, data_root) -> Path:
    folder = tmp_path_factory.mktemp('configs')
    (folder / 'tiny.py').write_text(tiny_pipeline(data_root, indices=256, epochs=1, drop_path=0.0))
    for name, text in dict(ema=EMA, ema_2_epochs=EMA_2_EPOCHS, ema_killed=EMA_KILLED, iter_checkpoints=ITER_CHECKPOINTS,
                           persistent=PERSISTENT, iter_based=ITER_BASED,
                           iter_based_killed=ITER_BASED_KILLED).items():
        (folder / f'{name}.py').write_text(text)
    return folder


@pytest.fixture(scope='module')
def finished(configs, tmp_path_factory) -> Path:
    """The tiny pipeline, every phase finished once."""
    work = tmp_path_factory.mktemp('finished') / 'work'
    result = train(str(configs / 'tiny.py'), '--phase', 'all', '--work-dir', str(work))
    assert result.returncode == 0, result.stdout[-3000:]
    return work


def digests(work: Path) -> dict[str, bytes]:
    return {str(phase): phase.product(work).read_bytes() for phase in PRODUCTS}


@needs_data
def test_a_finished_pipeline_reruns_as_finished_and_changes_nothing(configs, finished):
    before = digests(finished)
    result = train(str(configs / 'tiny.py'), '--phase', 'all', '--work-dir', str(finished))
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count('already finished') == len(PRODUCTS)
    assert digests(finished) == before
    tag = Tag.of_checkpoint(torch.load(Phase('incubate', 1).product(finished), weights_only=True))
    assert tag.holds == 'module' and tag.module == 1 and len(tag.fingerprint) == 64
    assert tag.inputs == {'meta.pth': hashlib.sha256(before['meta']).hexdigest()}
    for phase in PRODUCTS:  # every product names its classes, as MMEngine's own checkpoints do
        classes = torch.load(phase.product(finished), weights_only=True)['meta']['dataset_meta']['classes']
        assert len(classes) == 10 and classes[0] == 'T-shirt/top', phase


@needs_data
@pytest.mark.parametrize('options, difference', [
    (['model.backbone.arch.num_layers=6'], r'vit layout (2, 2) vs vit layout (3, 3)'),
    (['optim_wrapper.optimizer.lr=0.0005'], 'optim_wrapper.optimizer.lr 0.001 vs 0.0005'),
    (['incubation.meta.train_cfg.max_epochs=2'], 'train_cfg.max_epochs 1 vs 2'),
], ids=['layout', 'lr', 'epochs'])
def test_finished_phases_of_another_model_or_recipe_are_refused_naming_the_difference(
        configs, finished, tmp_path, options, difference):
    """Case finished-phases-of-another-model: the products are not 'already finished' for another config."""
    work = tmp_path / 'work'
    shutil.copytree(finished, work)
    before = digests(work)
    result = train(str(configs / 'tiny.py'), '--phase', 'all', '--work-dir', str(work), '--cfg-options', *options)
    assert result.returncode == 1
    assert last_line(result) == (f'error: {work}/meta/meta.pth does not fit this config ({difference}): use another '
                                 '--work-dir, or --retrain meta to set it and every phase made from it aside and '
                                 'train them again')
    assert 'already finished' not in result.stdout and digests(work) == before


@needs_data
def test_only_the_modules_of_another_layout_left_are_refused_too(configs, finished, tmp_path):
    work = tmp_path / 'work'
    (work / 'incubate').mkdir(parents=True)
    shutil.copytree(finished / 'incubate' / 'module_0', work / 'incubate' / 'module_0')
    result = train(str(configs / 'tiny.py'), '--phase', 'incubate', '--module', '0', '--work-dir', str(work),
                   '--cfg-options', 'model.backbone.arch.num_layers=6')
    assert result.returncode == 1
    assert 'module_0.pth does not fit this config (vit layout (2, 2) vs vit layout (3, 3))' in last_line(result)


@needs_data
def test_a_product_made_from_another_input_is_refused_and_retrain_sets_it_aside(configs, finished, tmp_path):
    """Another meta.pth than the one the modules were made from: the modules no longer fit; --retrain meta keeps
    the meta model (it fits), sets what no longer fits aside (modules, and the assembly and fine-tune made from
    them; kept, not deleted) and trains them again; E2E is untouched. Run again, --retrain sets nothing aside."""
    work = tmp_path / 'work'
    shutil.copytree(finished, work)
    meta = torch.load(work / 'meta' / 'meta.pth', weights_only=True)
    meta['meta']['dataset_meta'] = dict(classes=['another'] * 10)  # same weights and tag, other bytes
    torch.save(meta, work / 'meta' / 'meta.pth')
    result = train(str(configs / 'tiny.py'), '--phase', 'incubate', '--work-dir', str(work))
    assert result.returncode == 1
    assert 'module_0.pth does not fit this config (it was made from another meta.pth than the one now on disk)' \
        in last_line(result)
    result = train(str(configs / 'tiny.py'), '--phase', 'finetune', '--work-dir', str(work))  # its lineage too
    assert result.returncode == 1 and 'module_0.pth does not fit this config' in last_line(result)

    before = digests(work)
    command = (str(configs / 'tiny.py'), '--phase', 'all', '--work-dir', str(work), '--retrain', 'meta')
    result = train(*command)
    assert result.returncode == 0, result.stdout[-3000:]
    assert '--retrain meta: what it left fits this config, kept' in result.stdout
    aside = next((work / 'replaced').iterdir())
    for phase in PRODUCTS[1:-1]:  # everything made from the other meta model, set aside as it was
        assert phase.product(aside).read_bytes() == before[str(phase)], phase
    assert not (aside / 'meta').exists() and not list(aside.rglob('.phase.lock'))
    assert result.stdout.count('already finished') == 2  # meta, e2e
    assert digests(work)['e2e'] == before['e2e'] and digests(work)['meta'] == before['meta']
    for phase in PRODUCTS[1:-1]:  # retrained from the same weights and recipe: the original products again
        retrained, original = (torch.load(phase.product(w), weights_only=True) for w in (work, finished))
        assert all(torch.equal(retrained['state_dict'][k], v) for k, v in original['state_dict'].items()), phase
    records = load_records(work)  # the pipeline's own records only, not those set aside
    assert [str(Phase(r['phase'], r['module'])) for r in records] == [str(p) for p in PRODUCTS if p.spec.trains]
    assert method_results(work)['incubation']['cost'] == method_results(finished)['incubation']['cost']

    result = train(*command)  # a requeued job whose command still says --retrain: nothing set aside again
    assert result.returncode == 0 and len(list((work / 'replaced').iterdir())) == 1
    assert result.stdout.count('already finished') == len(PRODUCTS)


@needs_data
def test_retrain_refuses_a_phase_it_would_not_run_or_another_process_writes(configs, finished, tmp_path):
    work = tmp_path / 'work'
    shutil.copytree(finished, work)
    result = train(str(configs / 'tiny.py'), '--work-dir', str(work), '--retrain', 'e2e')
    assert result.returncode == 1
    assert last_line(result) == 'error: --retrain e2e: not among the phases to run (meta incubate assemble ' \
                                'finetune); add them to --phase'
    with PhaseLock(Phase('e2e').lock_file(work), 'e2e'):
        result = train(str(configs / 'tiny.py'), '--phase', 'e2e', '--work-dir', str(work), '--retrain', 'e2e',
                       '--cfg-options', 'incubation.e2e.train_cfg.max_epochs=2')
    assert result.returncode == 1 and 'the e2e phase is being written by another process' in last_line(result)
    assert digests(work) == digests(finished)


@needs_data
def test_a_phase_refuses_inputs_of_another_layout_or_recipe(configs, finished, tmp_path):
    """--phase incubate alone (a SLURM array job): a meta model of another layout or recipe is refused, and
    finished modules are not 'finished' once the meta phase's recipe changed."""
    work = tmp_path / 'work'
    shutil.copytree(finished / 'meta', work / 'meta')
    result = train(str(configs / 'tiny.py'), '--phase', 'incubate', '--work-dir', str(work), '--cfg-options',
                   'model.backbone.arch.num_layers=6')
    assert result.returncode == 1
    assert f'{work}/meta/meta.pth does not fit this config (vit layout (2, 2) vs vit layout (3, 3))' \
        in last_line(result)
    assert not (work / 'incubate').exists()
    result = train(str(configs / 'tiny.py'), '--phase', 'incubate', '--work-dir', str(finished), '--cfg-options',
                   'incubation.meta.optim_wrapper.optimizer.lr=0.002')
    assert result.returncode == 1 and 'already finished' not in result.stdout
    assert 'meta.pth does not fit this config (optim_wrapper.optimizer.lr 0.001 vs 0.002)' in last_line(result)


@needs_data
def test_a_changed_pretrained_source_or_its_blocks_or_init_checkpoint_is_refused(configs, finished, tmp_path):
    work, source = tmp_path / 'work', str(finished / 'e2e' / 'e2e.pth')
    meta_from = f'incubation.meta_from.checkpoint={source}'
    result = train(str(configs / 'tiny.py'), '--phase', 'meta', '--work-dir', str(work), '--cfg-options', meta_from)
    assert result.returncode == 0, result.stdout[-3000:]
    result = train(str(configs / 'tiny.py'), '--phase', 'meta', '--work-dir', str(work), '--cfg-options', meta_from)
    assert result.returncode == 0 and 'meta already finished' in result.stdout
    result = train(str(configs / 'tiny.py'), '--phase', 'meta', '--work-dir', str(work), '--cfg-options', meta_from,
                   'incubation.meta_from.blocks=[1,2]')
    assert result.returncode == 1 and 'meta_from.blocks unset vs [1, 2]' in last_line(result)

    init = ['model.backbone.init_cfg.type=Pretrained', 'model.backbone.init_cfg.prefix=backbone.']
    result = train(str(configs / 'tiny.py'), '--phase', 'e2e', '--work-dir', str(work), '--cfg-options', *init,
                   f'model.backbone.init_cfg.checkpoint={source}')
    assert result.returncode == 0, result.stdout[-3000:]
    result = train(str(configs / 'tiny.py'), '--phase', 'e2e', '--work-dir', str(work), '--cfg-options', *init,
                   f'model.backbone.init_cfg.checkpoint={finished / "finetune" / "finetuned.pth"}')
    assert result.returncode == 1
    assert 'it was made from another model.backbone.init_cfg.checkpoint than the one now on disk' in last_line(result)


@needs_data
def test_a_meta_model_made_by_make_meta_is_the_meta_phase_s_product(configs, finished, tmp_path):
    """The pipeline guide's growing recipe: make_meta.py into the work dir, then the pipeline skips meta training."""
    work = tmp_path / 'work'
    made = subprocess.run([sys.executable, 'tools/make_meta.py', str(finished / 'e2e' / 'e2e.pth'),
                           str(configs / 'tiny.py'), '--work-dir', str(work)], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert made.returncode == 0, made.stderr[-2000:]
    result = train(str(configs / 'tiny.py'), '--phase', 'meta', 'incubate', '--module', '0', '--work-dir', str(work))
    assert result.returncode == 0, result.stdout[-3000:]
    assert 'meta already finished' in result.stdout and Phase('incubate', 0).product(work).is_file()


def test_what_changes_a_recipe_s_fingerprint_and_what_does_not(load):
    """Which images a phase trains on and how it trains change the fingerprint; where the data lies, how it is
    validated and logged do not."""
    cfg = load(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py')

    def fingerprint(**options) -> str:
        changed = copy.deepcopy(cfg)
        changed.merge_from_dict(options)
        return recipe_fingerprint(phase_recipe(changed, 'meta'))[1]

    same = fingerprint()
    for options in (dict(train_dataloader=dict(dataset=dict(indices=100))),
                    dict(train_dataloader=dict(dataset=dict(ann_file='train_10pct.txt'))),
                    dict(train_dataloader=dict(dataset=dict(data_prefix='val'))),
                    dict(optim_wrapper=dict(optimizer=dict(lr=1.0)))):
        assert fingerprint(**options) != same, options
    for options in (dict(train_dataloader=dict(dataset=dict(data_root='/elsewhere'), pin_memory=True)),
                    dict(val_dataloader=dict(batch_size=7), val_cfg=None, train_cfg=dict(val_interval=5)),
                    dict(default_hooks=dict(logger=dict(interval=1), checkpoint=dict(interval=2))),
                    dict(work_dir='/elsewhere', log_level='DEBUG')):
        assert fingerprint(**options) == same, options


@needs_data
def test_a_diverging_phase_stops_and_writes_no_product(configs, tmp_path):
    """Case nan-loss-products-exported: lr 1000 diverges in the meta phase; nothing non-finite is written."""
    work = tmp_path / 'work'
    result = train(str(configs / 'tiny.py'), '--phase', 'all', '--work-dir', str(work),
                   '--cfg-options', 'optim_wrapper.optimizer.lr=1000.0')
    assert result.returncode == 1
    assert last_line(result).startswith('error: the meta phase diverged: loss nan at epoch 1, iteration ')
    assert 'no product written; last finite checkpoint: none' in last_line(result)
    assert not list(work.rglob('*.pth'))


@needs_data
def test_non_finite_weights_are_refused_wherever_they_are_read(configs, finished, tmp_path):
    from mmincubation.assemble import assemble
    from mmincubation.checkpoint import CheckpointError
    from tools.test import main as evaluate
    poisoned = {}
    for phase in (Phase('finetune'), Phase('incubate', 0)):
        checkpoint = torch.load(phase.product(finished), weights_only=True)
        checkpoint['state_dict']['backbone.pos_embed' if phase.name == 'finetune' else 'backbone.cls_token'][..., 0] = \
            float('nan')
        poisoned[phase.name] = tmp_path / phase.product_name
        torch.save(checkpoint, poisoned[phase.name])
    with pytest.raises(SystemExit, match=r'finetuned.pth holds non-finite weights \(NaN or Inf\) in 1 of 56 tensors '
                                         r'\(backbone.pos_embed\)'):
        evaluate([str(configs / 'tiny.py'), str(poisoned['finetune']), '--work-dir', str(tmp_path / 'test')])
    with pytest.raises(CheckpointError, match='module checkpoint .*module_0.pth holds non-finite weights'):
        assemble([poisoned['incubate'], Phase('incubate', 1).product(finished)], tmp_path / 'assembled.pth')
    assert not (tmp_path / 'assembled.pth').exists() and not (tmp_path / 'test').exists()


@needs_data
def test_ema_products_are_the_weights_the_records_scored(configs, tmp_path):
    """Case ema-hook-products-are-not-the-evaluated-weights."""
    work = tmp_path / 'work'
    result = train(str(configs / 'ema.py'), '--phase', 'meta', 'e2e', '--work-dir', str(work))
    assert result.returncode == 0, result.stdout[-3000:]
    for phase in (Phase('meta'), Phase('e2e')):
        product = torch.load(phase.product(work), weights_only=True)
        saved = torch.load(phase.work_dir(work) / 'epoch_1.pth', weights_only=False)  # MMEngine's: EMA in state_dict
        raw = {key[len('module.'):]: value for key, value in saved['ema_state_dict'].items() if key != 'steps'}
        assert product['meta']['mmincubation']['weights'] == 'ema'
        assert all(torch.equal(product['state_dict'][key], saved['state_dict'][key]) for key in saved['state_dict'])
        assert any(not torch.equal(product['state_dict'][key], raw[key]) for key in raw)
    record = json.loads((work / 'e2e' / 'phase_record.json').read_text())  # val set == test set here
    assert record['test_metrics']['accuracy/top1'] == record['history'][-1]['metrics']['accuracy/top1']
    result = train(str(configs / 'ema.py'), '--phase', 'meta', 'e2e', '--work-dir', str(work))
    assert result.returncode == 0 and result.stdout.count('already finished') == 2
    result = train(str(configs / 'tiny.py'), '--phase', 'meta', '--work-dir', str(work))  # the same without EMA
    assert 'custom_hooks' in last_line(result) and result.returncode == 1


@needs_data
def test_an_ema_phase_killed_mid_run_resumes_to_the_same_product(configs, tmp_path):
    reference, killed = tmp_path / 'reference', tmp_path / 'killed'
    assert train(str(configs / 'ema_2_epochs.py'), '--phase', 'e2e', '--work-dir', str(reference)).returncode == 0
    assert train(str(configs / 'ema_killed.py'), '--phase', 'e2e', '--work-dir', str(killed)).returncode == -9
    result = train(str(configs / 'ema_killed.py'), '--phase', 'e2e', '--work-dir', str(killed))
    assert result.returncode == 0, result.stdout[-3000:]
    products = [torch.load(work / 'e2e' / 'e2e.pth', weights_only=True) for work in (reference, killed)]
    assert products[1]['meta']['mmincubation']['weights'] == 'ema'
    assert all(torch.equal(products[0]['state_dict'][k], v) for k, v in products[1]['state_dict'].items())


@needs_data
@pytest.mark.parametrize('break_it', ['empty', 'dangling', 'truncated', 'copied'])
def test_a_broken_last_checkpoint_resumes_from_the_newest_whole_checkpoint(configs, finished, tmp_path, break_it):
    """Case disk-full-leaves-empty-last-checkpoint: after a full disk, the rerun goes on."""
    work = tmp_path / 'work'
    shutil.copytree(finished / 'meta', work / 'meta')
    (work / 'meta' / 'meta.pth').unlink()
    (work / 'meta' / 'phase_record.json').unlink()
    last = work / 'meta' / 'last_checkpoint'
    if break_it == 'empty':
        last.write_text('')
    elif break_it == 'dangling':
        last.write_text(str(work / 'meta' / 'epoch_2.pth'))
    elif break_it == 'truncated':  # a later checkpoint cut short by the full disk, named by last_checkpoint
        (work / 'meta' / 'epoch_2.pth').write_bytes((work / 'meta' / 'epoch_1.pth').read_bytes()[:4096])
        last.write_text(str(work / 'meta' / 'epoch_2.pth'))
    else:  # a copied work dir: last_checkpoint names the original's epoch_1.pth, another run's file
        assert last.read_text().strip() == str(finished / 'meta' / 'epoch_1.pth')
    result = train(str(configs / 'tiny.py'), '--phase', 'meta', '--work-dir', str(work))
    assert result.returncode == 0, result.stdout[-3000:]
    if break_it == 'copied':
        assert f'outside {work}/meta (a copied or moved work dir)' in result.stdout
    assert f'resuming from {work}/meta/epoch_1.pth, the newest whole checkpoint' in result.stdout
    assert (work / 'meta' / 'meta.pth').read_bytes() == (finished / 'meta' / 'meta.pth').read_bytes()


@needs_data
@pytest.mark.parametrize('config, message', [
    ('iter_checkpoints', 'the meta phase trains by epochs but default_hooks.checkpoint.by_epoch=False'),
    ('persistent', "the meta phase's train_dataloader.persistent_workers=True"),
])
def test_settings_that_cannot_resume_exactly_are_refused_before_training(configs, tmp_path, config, message):
    """Cases resume-mid-epoch-iteration-checkpoint and resume-not-exact-with-persistent-workers."""
    result = train(str(configs / f'{config}.py'), '--phase', 'meta', '--work-dir', str(tmp_path / 'work'))
    assert result.returncode == 1 and last_line(result).startswith(f'error: {message}')
    assert not list(tmp_path.rglob('*.pth'))


@needs_data
def test_an_iteration_based_phase_killed_mid_stream_resumes_exactly(configs, tmp_path):
    """Iteration checkpoints, persistent workers and a random transform, killed at iteration 6 (after iter_4.pth):
    the rerun skips the 4 trained batches and ends with the uninterrupted run's weights and record."""
    reference, killed = tmp_path / 'reference', tmp_path / 'killed'
    result = train(str(configs / 'iter_based.py'), '--phase', 'e2e', '--work-dir', str(reference))
    assert result.returncode == 0, result.stdout[-3000:]
    assert train(str(configs / 'iter_based_killed.py'), '--phase', 'e2e', '--work-dir', str(killed)).returncode == -9
    result = train(str(configs / 'iter_based_killed.py'), '--phase', 'e2e', '--work-dir', str(killed))
    assert result.returncode == 0, result.stdout[-3000:]
    assert 'Advance dataloader 4 steps' in result.stdout
    products = [torch.load(work / 'e2e' / 'e2e.pth', weights_only=True)['state_dict'] for work in (reference, killed)]
    assert all(torch.equal(products[0][key], products[1][key]) for key in products[0])
    records = [json.loads((work / 'e2e' / 'phase_record.json').read_text()) for work in (reference, killed)]
    assert records[0]['iters'] == records[1]['iters'] == 16 and records[0]['history'] == records[1]['history']


PIPELINES = sorted(str(path.relative_to(ROOT)) for path in (ROOT / 'configs').rglob('*.py')
                   if path.name.startswith('incubate_'))


@pytest.mark.parametrize('config', PIPELINES)
def test_every_shipped_pipeline_resumes_exactly_in_every_phase(load, config):
    """The pipeline guide's resume promise holds for every shipped pipeline config: no phase has a refused setting."""
    cfg = load(ROOT / config)
    from mmincubation.engine.runner import build_layout
    for phase in all_phases(build_layout(cfg).num_modules):
        if phase.spec.trains:
            check_resumable(phase_recipe(cfg, phase.name, phase.module), str(phase))


def test_num_modules_must_be_a_whole_number(load):
    from mmincubation.engine.runner import build_layout
    from mmincubation.layout import LayoutError
    cfg = load(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py')
    for bad in (2.5, '2', 0, True):
        cfg.incubation.num_modules = bad
        with pytest.raises(LayoutError, match=f'incubation.num_modules must be a positive whole number, got {bad!r}'):
            build_layout(cfg)


def test_the_phase_table_answers_for_every_phase():
    assert [str(p) for p in all_phases(2)] == ['meta', 'incubate module 0', 'incubate module 1', 'assemble',
                                               'finetune', 'e2e']
    assert Phase('meta').dependents(2) == [Phase('incubate', 0), Phase('incubate', 1), Phase('assemble'),
                                           Phase('finetune'), Phase('stack'), Phase('grow')]  # the peers too
    assert [str(p) for p in all_phases(2, ['stack'])] == ['meta', 'stack']
    assert Phase('incubate', 1).dependents(2) == [Phase('assemble'), Phase('finetune')]
    assert Phase('e2e').dependents(2) == [] and not PHASE_TABLE['assemble'].trains
    assert Phase('assemble').lock_file('w') == Path('w/.assemble.lock')
    assert Phase('incubate', 3).lock_file('w') == Path('w/incubate/module_3/.phase.lock')


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    """One writer per phase: a live holder in another process blocks, naming host, pid and start time."""
    lock_file = tmp_path / 'meta' / '.phase.lock'
    holder = subprocess.Popen([sys.executable, '-c', (
        'import sys, time; sys.path.insert(0, sys.argv[2])\n'
        'from mmincubation.engine.runner.phase_lock import PhaseLock\n'
        'lock = PhaseLock(sys.argv[1], "meta"); lock.acquire(); print("held", flush=True); time.sleep(60)'),
        str(lock_file), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(PhaseLocked, match=rf'the meta phase is being written by another process \(host '
                                              rf'{socket.gethostname()}, pid {holder.pid}, started 20'):
            PhaseLock(lock_file, 'meta').acquire()
    finally:
        holder.kill()
        holder.wait()
    with PhaseLock(lock_file, 'meta'):  # a SIGKILLed holder's lock does not block the rerun
        assert json.loads(lock_file.read_text())['pid'] == os.getpid()
    assert not lock_file.exists()


def test_a_lock_of_a_dead_node_is_taken_over_once_its_heartbeat_is_stale(tmp_path):
    lock_file = tmp_path / '.phase.lock'
    lock_file.write_text(json.dumps(dict(host='node-that-died', pid=1, started='then')))
    with pytest.raises(PhaseLocked, match='host node-that-died, pid 1'):  # recent heartbeat: maybe alive
        PhaseLock(lock_file, 'finetune').acquire()
    old = time.time() - STALE_AFTER - 1
    os.utime(lock_file, (old, old))
    with PhaseLock(lock_file, 'finetune'):
        assert json.loads(lock_file.read_text())['host'] == socket.gethostname()


@needs_data
def test_module_jobs_on_one_work_dir_run_side_by_side_and_a_second_writer_is_refused(configs, finished, tmp_path):
    work = tmp_path / 'work'
    shutil.copytree(finished / 'meta', work / 'meta')
    command = [sys.executable, 'tools/train.py', str(configs / 'tiny.py'), '--phase', 'incubate', '--work-dir',
               str(work), '--module']
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    jobs = [subprocess.Popen(command + [str(k)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    errors = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    for k in (0, 1):
        assert Phase('incubate', k).product(work).read_bytes() == Phase('incubate', k).product(finished).read_bytes()

    (work / 'incubate' / 'module_1' / 'module_1.pth').unlink()
    with PhaseLock(Phase('incubate', 1).lock_file(work), 'incubate module 1'):
        result = train(str(configs / 'tiny.py'), '--phase', 'incubate', '--module', '1', '--work-dir', str(work))
    assert result.returncode == 1
    assert f'the incubate module 1 phase is being written by another process (host {socket.gethostname()}, pid ' \
           f'{os.getpid()}' in last_line(result)


def test_a_checkpoint_tag_of_any_age_reads_and_round_trips():
    old = dict(phase='assemble', layout=[2, 2])  # written before holds/backbone/stages were recorded
    tag = Tag.from_dict(old)
    assert (tag.holds, tag.backbone, tag.stages, tag.weights) == ('full', 'vit', (4, ), 'raw')
    new = Tag.of_layout('incubate', dict(layout=[2, 2], backbone='swin', stages=[2, 2]), module=1, holds='hybrid',
                        inputs={'meta.pth': 'ab'}, extra=dict(sources=['x']))
    assert Tag.from_dict(new.to_dict()) == new
    assert new.misfit(new.with_(module=0)) == 'module 1 vs 0'
    with pytest.raises(RecipeError, match='the meta phase trains by epochs'):
        check_resumable(Config(dict(train_cfg=dict(max_epochs=1), default_hooks=dict(checkpoint=dict(by_epoch=False)))),
                        'meta')
