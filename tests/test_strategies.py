"""Phases on MMEngine's FlexibleRunner and its strategies (mmincubation/engine/runner/strategies.py).

The sharded run is real: two gloo processes on CPU (torchrun), module incubation and fine-tune under
``FSDPStrategy`` (each block an FSDP unit, full state dicts), the fine-tune with activation checkpointing. It
trains on the same batches as one process with twice the batch (``DefaultSampler`` gives rank r the samples
r, r+2, ... of one shuffled order, and FSDP averages the gradients over the ranks), so its products equal the
single process's up to float rounding: the gradient of a batch is summed in another order (two halves, then
their mean), and AdamW divides each step by the square root of the second moments, which for the tensors of
tiny gradients turns rounding of 1e-7 into weight differences of 1e-5 to 6e-5 after 8 steps (measured; weights
of size 1). The tolerance, 2e-4, is far below what the 8 steps move the weights (checked: more than 10 times).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_pipeline
from mmengine.config import Config

from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.phase_config import RecipeError, recipe_fingerprint
from mmincubation.engine.runner.strategies import PhaseFlexibleRunner, build_phase_runner, fill_strategy
from mmincubation.layout import convert_state_dict

WORLD, BATCH = 2, 32
TOLERANCE = 2e-4
SHARDED = '''
incubation.update(
    incubate=dict(train_cfg=dict(max_epochs=2), runner_type='FlexibleRunner', strategy=dict(type='FSDPStrategy')),
    finetune=dict(train_cfg=dict(max_epochs=2), strategy=dict(type='FSDPStrategy'), activation_checkpointing='blocks',
                  param_scheduler=[dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=0)]))
'''
WEIGHT_DECAY = "\noptim_wrapper = dict(optimizer=dict(weight_decay=1.0))\n"
#: The single process's twin: one process with both ranks' batch in the phases the sharded run trains (the meta
#: model, trained once, is shared).
SINGLE = f'''
incubation['incubate']['train_dataloader'] = dict(batch_size={WORLD * BATCH})
incubation['finetune']['train_dataloader'] = dict(batch_size={WORLD * BATCH})
'''
#: The sharded fine-tune, killed after iteration 6 of 8 (its epoch-1 checkpoint was written at 4), then rerun.
KILLED = '''
custom_imports = dict(imports=['sigkill_once_hook'], allow_failed_imports=False)
incubation['finetune']['custom_hooks'] = [dict(type='SigkillOnceHook', at_iter=6)]
'''


def torchrun(config: Path, work_dir: Path, *phases: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(ROOT / 'tests'), os.environ.get('PYTHONPATH', '')]))
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={WORLD}',
               'tools/train.py', str(config), '--launcher', 'pytorch', '--work-dir', str(work_dir), '--phase', *phases]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def train(config: Path, work_dir: Path, *phases: str) -> None:
    result = subprocess.run([sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir), '--phase',
                             *phases], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data_root) -> dict[str, Path]:
    """Work dirs of the single process, the sharded run and the sharded run killed in its fine-tune and rerun; the
    meta model is trained once and shared."""
    root = tmp_path_factory.mktemp('strategies')
    # weight decay 1.0: an optimizer that lost it for FSDP's flattened parameters would move them far more than
    # the tolerance (it did: MMEngine judged the 1-D shards as norms and biases)
    base = tiny_pipeline(data_root, indices=256, epochs=2, drop_path=0.0) + WEIGHT_DECAY
    configs = {name: root / f'{name}.py' for name in ('single', 'sharded', 'killed')}
    configs['single'].write_text(base + SHARDED.replace("runner_type='FlexibleRunner', ", '').replace(
        "strategy=dict(type='FSDPStrategy'), ", '').replace("strategy=dict(type='FSDPStrategy')", '') + SINGLE)
    configs['sharded'].write_text(base + SHARDED)
    configs['killed'].write_text(base + SHARDED + KILLED)
    work = {name: root / name for name in configs}
    train(configs['single'], work['single'], 'meta', 'incubate', 'assemble', 'finetune')
    shutil.copytree(work['single'] / 'meta', work['sharded'] / 'meta', ignore=shutil.ignore_patterns('*.lock'))
    result = torchrun(configs['sharded'], work['sharded'], 'incubate', 'assemble', 'finetune')
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    work['killed'].mkdir()
    for made in ('meta', 'incubate', 'assembled.pth'):  # the same recipes as the sharded run's: they fit
        source = work['sharded'] / made
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work['killed'] / made)
    killed = torchrun(configs['killed'], work['killed'], 'finetune')
    assert killed.returncode != 0 and (work['killed'] / 'finetune' / '.killed_once').is_file()
    assert not (work['killed'] / 'finetune' / 'finetuned.pth').exists()
    rerun = torchrun(configs['killed'], work['killed'], 'finetune')
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-6000:]
    assert 'resumed' in (rerun.stdout + rerun.stderr).lower()
    return dict(work, configs=configs, log=result.stdout + result.stderr)


def test_sharded_products_equal_the_single_process_ones(runs):
    for product in ('incubate/module_0/module_0.pth', 'incubate/module_1/module_1.pth', 'finetune/finetuned.pth'):
        single, sharded = weights(runs['single'] / product), weights(runs['sharded'] / product)
        assert sharded.keys() == single.keys(), product
        for key, value in single.items():
            torch.testing.assert_close(sharded[key], value, atol=TOLERANCE, rtol=0, msg=f'{product} {key}')
    finetuned = weights(runs['single'] / 'finetune' / 'finetuned.pth')
    assembled = weights(runs['single'] / 'assembled.pth')
    moved = max((finetuned[key] - assembled[key]).abs().max().item() for key in assembled)
    assert moved > 10 * TOLERANCE  # the tolerance is far below what training changes


def test_every_tensor_of_the_model_reaches_the_sharded_product(runs):
    cfg = Config.fromfile(str(runs['configs']['sharded']))
    from mmpretrain.registry import MODELS
    model = MODELS.build(phase_recipe(cfg, 'finetune').model)
    product = weights(runs['sharded'] / 'finetune' / 'finetuned.pth')
    expected = model.state_dict()
    assert product.keys() == expected.keys()
    assert all(product[key].shape == value.shape for key, value in expected.items())
    assert all(torch.isfinite(value).all() and value.abs().sum() > 0 for key, value in product.items()
               if 'bias' not in key)


def test_frozen_meta_blocks_stay_the_meta_models_under_fsdp(runs):
    """Module 1's last checkpoint (a full state dict gathered from the shards): every tensor outside module 1 is the
    meta model's, bit for bit."""
    cfg = Config.fromfile(str(runs['configs']['sharded']))
    layout = build_layout(cfg)
    hybrid = weights(runs['sharded'] / 'incubate' / 'module_1' / 'epoch_2.pth')
    meta = convert_state_dict(weights(runs['sharded'] / 'meta' / 'meta.pth'), layout.meta(), layout.hybrid(1), [0])
    assert meta and all(torch.equal(hybrid[key], value) for key, value in meta.items())


def test_a_killed_sharded_fine_tune_resumes_exactly(runs):
    uninterrupted = weights(runs['sharded'] / 'finetune' / 'finetuned.pth')
    resumed = weights(runs['killed'] / 'finetune' / 'finetuned.pth')
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[key], value) for key, value in uninterrupted.items())


# ------------------------------------------------------------------ choosing the runner (no training)
@pytest.fixture
def recipe(load, data_root):
    cfg = load(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py')
    cfg.train_dataloader.dataset.data_root = data_root
    return cfg


def test_a_strategy_on_the_stock_runner_is_refused_not_dropped(recipe):
    recipe.incubation.finetune.update(runner_type='Runner', strategy=dict(type='FSDPStrategy'))
    with pytest.raises(RecipeError, match="incubation.finetune.runner_type='FlexibleRunner'"):
        build_phase_runner(phase_recipe(recipe, 'finetune'), 'incubation.finetune')


def test_ema_on_the_flexible_runner_deepspeed_and_unknown_runners_are_refused(recipe):
    for strategy in ('FSDPStrategy', 'DDPStrategy'):  # MMEngine 0.10.7's EMAHook fails on the FlexibleRunner
        recipe.incubation.finetune.update(strategy=dict(type=strategy), custom_hooks=[dict(type='EMAHook')])
        with pytest.raises(RecipeError, match=f'incubation.finetune: an EMAHook on the FlexibleRunner .{strategy}'):
            build_phase_runner(phase_recipe(recipe, 'finetune'), 'incubation.finetune')
    recipe.incubation.meta.strategy = dict(type='DeepSpeedStrategy', zero_optimization=dict(stage=3))
    with pytest.raises(RecipeError, match='DeepSpeedStrategy is not supported yet'):
        build_phase_runner(phase_recipe(recipe, 'meta'))
    recipe.incubation.e2e.runner_type = 'NoSuchRunner'
    with pytest.raises(RecipeError, match='NoSuchRunner'):
        build_phase_runner(phase_recipe(recipe, 'e2e'))


def test_every_phases_runner_settings_are_checked_before_anything_trains(recipe, tmp_path):
    """A strategy without a distributed launch and a typo in activation_checkpointing stop the pipeline at once,
    naming the phase's setting, before the meta model trains."""
    from mmincubation.engine.runner import IncubationRunner
    recipe.work_dir = str(tmp_path / 'work')
    recipe.incubation.finetune.strategy = dict(type='FSDPStrategy')
    with pytest.raises(RecipeError, match="incubation.finetune: strategy='FSDPStrategy' needs a distributed launch"):
        IncubationRunner(recipe).train()
    del recipe.incubation.finetune['strategy']
    recipe.incubation.finetune.activation_checkpointing = ['backbone.layer.0']
    with pytest.raises(RecipeError, match=r"incubation.finetune.activation_checkpointing names \['backbone.layer.0'\]"):
        IncubationRunner(recipe).train()
    assert not (tmp_path / 'work' / 'meta').exists()


def test_runner_and_strategy_are_how_a_phase_is_spread_not_what_it_trains(recipe):
    """A finished phase fits a rerun on another strategy (as on another machine count)."""
    plain = recipe_fingerprint(phase_recipe(recipe, 'finetune'))[1]
    recipe.incubation.finetune.update(runner_type='FlexibleRunner', strategy=dict(type='FSDPStrategy'))
    assert recipe_fingerprint(phase_recipe(recipe, 'finetune'))[1] == plain


def test_the_flexible_runner_without_a_strategy_builds(recipe, tmp_path, monkeypatch):
    """Without a launcher it runs in one process, as the stock Runner: no launcher inferred from the environment
    (a SLURM allocation's variables), no process group started."""
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('SLURM_NTASKS', '2')
    recipe.incubation.meta.runner_type = 'FlexibleRunner'
    run = phase_recipe(recipe, 'meta')
    run.work_dir = str(tmp_path)
    runner = build_phase_runner(run)
    assert type(runner) is PhaseFlexibleRunner and type(runner.strategy).__name__ == 'SingleDeviceStrategy'


def test_a_phase_with_a_strategy_runs_on_the_flexible_runner(recipe, tmp_path):
    recipe.strategy = dict(type='DDPStrategy')  # top level, as inherited from an mmpretrain FSDP / DDP config
    run = phase_recipe(recipe, 'meta')
    run.work_dir = str(tmp_path)
    runner = build_phase_runner(run)
    assert isinstance(runner, PhaseFlexibleRunner)
    assert runner.strategy.model_wrapper['device_ids'] is None or torch.cuda.is_available()


@pytest.mark.parametrize('config,block', [('incubate_demo_fashion_mnist.py', 'TransformerEncoderLayer'),
                                          ('incubate_demo_fashion_mnist_swin.py', 'SwinBlock')])
def test_fsdp_units_are_the_blocks_of_the_phase_network(load, data_root, tmp_path, config, block):
    """A hybrid's frozen meta blocks and its trained module never share an FSDP unit: each block is one."""
    cfg = load(ROOT / 'configs' / config)
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.incubation.module_init = 'scratch'
    cfg.incubation.incubate.update(runner_type='FlexibleRunner', strategy=dict(type='FSDPStrategy'))
    run = phase_recipe(cfg, 'incubate', 1)
    run.work_dir = str(tmp_path)
    runner = build_phase_runner(run)
    policy = runner.strategy.model_wrapper['auto_wrap_policy']
    assert {cls.__name__ for cls in policy._module_classes} == {block}
    blocks = [module for module in runner.model.modules() if type(module).__name__ == block]
    assert len(blocks) == sum(build_layout(cfg).hybrid(1).depths)
    trained = [any(p.requires_grad for p in module.parameters()) for module in blocks]
    assert all(all(p.requires_grad == t for p in module.parameters()) for module, t in zip(blocks, trained))
    assert 0 < sum(trained) < len(blocks)


def test_fsdp_settings_filled_for_whole_products():
    filled = fill_strategy(dict(type='FSDPStrategy'), cuda=False)
    assert filled['model_wrapper'] == dict(type='MMFullyShardedDataParallel', use_orig_params=True, device_id='cpu')
    assert filled['type'] == 'mmincubation.PhaseFSDPStrategy'  # its optimizer state survives a resume
    assert filled['state_dict_cfg']['state_dict_type'] == 'FULL_STATE_DICT'
    assert filled['state_dict_cfg']['state_dict_config'] == dict(type='FullStateDictConfig', rank0_only=True,
                                                                 offload_to_cpu=False)
    kept = fill_strategy(dict(type='FSDPStrategy', model_wrapper=dict(use_orig_params=False)), cuda=True)
    assert kept['model_wrapper']['use_orig_params'] is False and 'device_id' not in kept['model_wrapper']
    with pytest.raises(RecipeError, match="state_dict_cfg='full'"):
        fill_strategy(dict(type='FSDPStrategy', state_dict_cfg='local'), cuda=False)
