"""Stock tools never silently train something else: a pipeline config names its runner
(configs/_base_/incubation_runner.py), so mmpretrain's own tools/train.py runs the pipeline ours runs."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import mmpretrain
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS
from test_package import environment_without_checkout, needs_data, tiny_pipeline_config

from mmincubation.engine.runner import IncubationRunner, phase_recipe
from mmincubation.engine.runner.phase_config import RecipeError
from mmincubation.engine.runner.run_settings import check_pipeline_run_settings
from tools.train import main as our_train

ROOT = Path(__file__).resolve().parents[1]
STOCK_TRAIN = Path(mmpretrain.__file__).parent / '.mim' / 'tools' / 'train.py'
DEMO = ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'
#: The products of the phases a pipeline config runs by default (meta incubate assemble finetune).
DEFAULT_PRODUCTS = ['meta/meta.pth', 'incubate/module_0/module_0.pth', 'incubate/module_1/module_1.pth',
                    'assembled.pth', 'finetune/finetuned.pth']


def stock_cfg(config: Path, *argv: str) -> Config:
    """The config mmpretrain's tools/train.py hands ``RUNNERS.build`` for ``config argv``: its own merge_args."""
    spec = importlib.util.spec_from_file_location('stock_mmpretrain_train', STOCK_TRAIN)
    stock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stock)
    old_argv = sys.argv
    sys.argv = [str(STOCK_TRAIN), str(config), *argv]
    try:
        args = stock.parse_args()
    finally:
        sys.argv = old_argv
    return stock.merge_args(Config.fromfile(str(config)), args)


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def test_every_pipeline_config_names_the_incubation_runner():
    """Every config with an ``incubation`` section (and only those: E2E baselines are plain mmpretrain configs, on
    the stock Runner or, with a strategy, on the FlexibleRunner of a pipeline's phases, which custom_imports
    registers for the stock tool too)."""
    configs = sorted(path for path in (ROOT / 'configs').glob('**/*.py')
                     if '_base_' not in path.parts and path.name.startswith(('incubate_', 'e2e_')))
    assert len(configs) > 20
    for path in configs:
        cfg = Config.fromfile(str(path))
        if 'incubation' in cfg:
            assert cfg.runner_type == 'mmincubation.IncubationRunner', path
            assert cfg.custom_imports == dict(imports=['mmincubation'], allow_failed_imports=False), path
        elif 'strategy' in cfg:  # the billion-parameter baselines (configs/e2e_{vit,dinov2}_g.py): FSDP
            assert cfg.runner_type == 'mmincubation.PhaseFlexibleRunner', path
            assert cfg.custom_imports == dict(imports=['mmincubation'], allow_failed_imports=False), path
        else:
            assert 'runner_type' not in cfg, path


@needs_data
def test_stock_mmpretrain_train_runs_the_same_pipeline(data_root, tmp_path):
    config = tmp_path / 'tiny_pipeline.py'
    config.write_text(tiny_pipeline_config(str(DEMO), data_root))  # stock tools read bases before our imports
    env = dict(environment_without_checkout(), PYTHONPATH=str(ROOT))
    # --no-persistent-workers: the stock tool defaults every loader to persistent workers, which torch refuses
    # for the demo's num_workers=0 (and our epoch-based phases refuse with workers: no exact resume).
    runs = {'stock': [STOCK_TRAIN, config, '--work-dir', tmp_path / 'stock', '--no-persistent-workers'],
            'ours': [ROOT / 'tools' / 'train.py', config, '--work-dir', tmp_path / 'ours']}
    for name, argv in runs.items():
        run = subprocess.run([sys.executable, *map(str, argv)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, f'{name}: {run.stdout[-3000:]}{run.stderr[-3000:]}'
        assert 'val top-1' in run.stdout + run.stderr  # the pipeline's summary, not a plain classifier's log
    for product in DEFAULT_PRODUCTS:
        stock, ours = state_dict(tmp_path / 'stock' / product), state_dict(tmp_path / 'ours' / product)
        assert stock.keys() == ours.keys(), product
        assert all(torch.equal(stock[key], ours[key]) for key in stock), product
    assert not (tmp_path / 'stock' / 'e2e').exists()  # the config's default phases, as ours without --phase

    # The stock tool's resume=False does not stop an interrupted phase from resuming: with the fine-tune's
    # product gone (killed before the export), the next run resumes from the phase's last checkpoint.
    (tmp_path / 'stock' / 'finetune' / 'finetuned.pth').unlink()
    runner = RUNNERS.build(stock_cfg(config, '--work-dir', str(tmp_path / 'stock'), '--no-persistent-workers'))
    assert isinstance(runner, IncubationRunner) and runner.cfg.resume is False
    run_cfg = runner.run_config('finetune')
    assert run_cfg.resume is True and Path(run_cfg.load_from).name == 'epoch_1.pth'


def test_stock_tool_settings_reach_the_phases_as_ours_do(tmp_path):
    cfg = stock_cfg(DEMO, '--work-dir', str(tmp_path), '--amp', '--resume', '--launcher', 'none')
    runner = RUNNERS.build(cfg)
    assert isinstance(runner, IncubationRunner)
    assert runner.phases == ['meta', 'incubate', 'assemble', 'finetune'] and runner.work_dir == tmp_path
    for phase, module in (('meta', None), ('incubate', 1), ('finetune', None)):
        recipe = phase_recipe(runner.cfg, phase, module)
        assert recipe.optim_wrapper.type == 'AmpOptimWrapper' and recipe.launcher == 'none'
        assert recipe.load_from is None  # --resume (latest) alone starts nothing from a checkpoint
    run_cfg = runner.run_config('meta')
    assert run_cfg.resume is False and run_cfg.load_from is None  # nothing to resume yet
    assert Path(run_cfg.work_dir) == tmp_path / 'meta'


@pytest.mark.parametrize('argv', [['--resume', 'epoch_3.pth'], ['--cfg-options', 'load_from=epoch_3.pth']])
def test_a_top_level_load_from_is_refused_by_our_tool(tmp_path, argv):
    with pytest.raises(SystemExit, match='load_from=.*epoch_3.pth.* would start every phase from it'):
        our_train([str(DEMO), '--work-dir', str(tmp_path), *argv])
    assert not os.listdir(tmp_path)  # refused before anything is written


def test_check_pipeline_run_settings():
    cfg = Config.fromfile(str(DEMO))
    check_pipeline_run_settings(cfg)  # the config's own load_from=None, resume=False
    cfg.resume = True
    check_pipeline_run_settings(cfg)
    cfg.load_from = 'epoch_3.pth'
    with pytest.raises(RecipeError, match='incubation.<phase>.load_from'):
        check_pipeline_run_settings(cfg)
    plain = Config(dict(model=cfg.model, load_from='epoch_3.pth'))
    check_pipeline_run_settings(plain)  # a plain config's load_from is MMEngine's, untouched


def test_a_top_level_load_from_is_refused_by_the_stock_tool(tmp_path):
    cfg = stock_cfg(DEMO, '--work-dir', str(tmp_path), '--resume', 'epoch_3.pth')
    with pytest.raises(RecipeError, match='would start every phase from it'):
        RUNNERS.build(cfg)
