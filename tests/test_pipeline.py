"""The whole pipeline runs from one config as MMEngine runs: products, skipping, resuming, errors."""
from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import tiny_classifier_cfg  # noqa: F401  (shared fixtures)
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

from mmincubation.checkpoint import CheckpointError
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.engine.runner import IncubationRunner, Phase, phase_recipe
from mmincubation.engine.runner.records import load_records, method_results
from tools.train import merge_args, parse_args

DEMO = 'configs/incubate_demo_fashion_mnist.py'
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


def tiny_demo_cfg(data_root: str, work_dir: Path) -> Config:
    """The demo config at a few seconds per phase: 256 training and 200 test images, 2 epochs each."""
    cfg = Config.fromfile(DEMO)
    cfg.work_dir = str(work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
        cfg[loader].batch_size = 64
    cfg.train_dataloader.dataset.indices = 256
    cfg.val_dataloader.dataset.indices = 200
    cfg.test_dataloader.dataset.indices = 200
    for phase in ('meta', 'incubate', 'finetune', 'e2e'):
        cfg.incubation[phase].train_cfg.max_epochs = 2
    cfg.param_scheduler[0].warmup = 2  # warmup within the 8 iterations
    cfg.default_hooks.logger.interval = 1
    return cfg


@needs_data
def test_pipeline_produces_a_plain_model_and_skips_finished_phases(data_root, tmp_path):
    cfg = tiny_demo_cfg(data_root, tmp_path)
    # From timm's init (every Linear std 0.02) this width-64 model starts slowly: E2E from scratch is still at
    # chance after 8 or 16 iterations (14.5 / 15.5 % top-1), not after 24 (29 %); fine-tuning the assembled
    # model (grown modules, 8 iterations) ended at 19.5-21 %, so it gets 24 iterations too.
    cfg.incubation.e2e.train_cfg.max_epochs = 6
    cfg.incubation.finetune.train_cfg.max_epochs = 6
    IncubationRunner(cfg, phases=('meta', 'incubate', 'assemble', 'finetune', 'e2e')).train()

    products = ['meta/meta.pth', *[f'incubate/module_{k}/module_{k}.pth' for k in range(4)],
                'assembled.pth', 'finetune/finetuned.pth', 'e2e/e2e.pth']
    for product in products:
        assert (tmp_path / product).is_file(), product
    # The assembled checkpoint loads strictly into the stock 8-block model of the base config.
    base = Config.fromfile('configs/_base_/models/vit-tiny-p4_fashion-mnist.py')
    full = MODELS.build(base.model)
    load_checkpoint(full, str(tmp_path / 'assembled.pth'), strict=True)

    records = {(record['phase'], record['module']): record for record in load_records(tmp_path)}
    assert list(records) == [('meta', None), *[('incubate', k) for k in range(4)], ('finetune', None), ('e2e', None)]
    assert records['meta', None]['num_blocks'] == 4 and records['incubate', 1]['num_blocks'] == 5
    assert records['finetune', None]['num_blocks'] == 8 == records['e2e', None]['num_blocks']
    # Each record holds its own phase's cost: images seen x blocks trained.
    for record in records.values():
        assert record['cost'] == record['images'] * record['num_blocks'] > 0
    results = method_results(tmp_path)
    assert results['incubation']['cost'] == sum(r['cost'] for key, r in records.items() if key[0] != 'e2e')
    assert results['e2e']['cost'] == records['e2e', None]['cost']
    records = {key[0]: record for key, record in records.items()}
    # Learned something: 10 classes, so chance is 10 %.
    assert records['finetune']['test_metrics']['accuracy/top1'] > 20
    assert records['e2e']['test_metrics']['accuracy/top1'] > 20

    stamps = {p: (tmp_path / p).stat().st_mtime_ns for p in products}
    IncubationRunner(cfg, phases=('meta', 'incubate', 'assemble', 'finetune', 'e2e')).train()
    assert stamps == {p: (tmp_path / p).stat().st_mtime_ns for p in products}  # nothing was redone


def crash_after_first_checkpoint(hook: CheckpointHook, runner) -> None:
    """Simulates a job killed right after its first epoch's checkpoint was written (outside the recipe: a
    crashing hook in the config would make the rerun's recipe another one, which is refused)."""
    SAVE_EPOCH(hook, runner)
    if runner.epoch == 0:  # the loop counts the epoch only after this hook
        raise RuntimeError('simulated crash')


SAVE_EPOCH = CheckpointHook.after_train_epoch


@needs_data
def test_interrupted_phase_resumes_from_its_last_checkpoint(data_root, tmp_path):
    cfg = tiny_demo_cfg(data_root, tmp_path)
    with pytest.raises(RuntimeError, match='simulated crash'), \
            mock.patch.object(CheckpointHook, 'after_train_epoch', crash_after_first_checkpoint):
        IncubationRunner(cfg, phases=('meta', )).train()
    assert (tmp_path / 'meta' / 'epoch_1.pth').is_file() and not (tmp_path / 'meta' / 'meta.pth').exists()
    crashed_at = torch.load(tmp_path / 'meta' / 'epoch_1.pth', weights_only=True)['meta']['iter']

    assert IncubationRunner(cfg).run_config('meta').resume  # the derived config asks MMEngine to resume
    IncubationRunner(cfg, phases=('meta', )).train()
    record = json.loads((tmp_path / 'meta' / 'phase_record.json').read_text())
    assert [entry['epoch'] for entry in record['history']] == [2]  # only the second epoch was trained again
    assert record['iters'] == 2 * crashed_at
    assert (tmp_path / 'meta' / 'meta.pth').is_file()


def test_a_module_without_its_meta_model_is_refused_with_the_command_to_run(tmp_path):
    cfg = Config.fromfile(DEMO)
    cfg.work_dir = str(tmp_path)
    with pytest.raises(CheckpointError, match=r'meta\.pth is missing: run the meta phase first .*--phase meta'):
        IncubationRunner(cfg, phases=('incubate', ), modules=[2]).train()
    with pytest.raises(CheckpointError, match=r'module_0\.pth is missing: run module 0 first'):
        IncubationRunner(cfg, phases=('assemble', )).train()
    assert not any(tmp_path.iterdir())


def test_train_command_line_selects_phases_and_modules(tmp_path):
    cfg = merge_args(Config.fromfile(DEMO), parse_args(
        [DEMO, '--phase', 'incubate', '--module', '1', '3', '--work-dir', str(tmp_path), '--amp',
         '--cfg-options', 'incubation.incubate.train_cfg.max_epochs=7', 'incubation.module_init=meta']))
    runner = IncubationRunner.from_cfg(cfg)
    assert runner.phases == ['incubate'] and runner.modules == [1, 3]
    module_cfg = phase_recipe(cfg, 'incubate', 3)
    assert module_cfg.train_cfg.max_epochs == 7 and module_cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert Phase('incubate', 3).work_dir(cfg.work_dir) == tmp_path / 'incubate' / 'module_3'
    assert module_cfg.model.backbone.arch['num_layers'] == 3 + 2
    assert module_cfg.model.module_init == 'meta'
    default = Config.fromfile(DEMO)
    default.work_dir = str(tmp_path)
    assert phase_recipe(default, 'incubate', 0).model.module_init == 'meta'  # the demo's
    default.incubation.pop('module_init')
    assert phase_recipe(default, 'incubate', 0).model.module_init == 'scratch'  # paper's
    with pytest.raises(ValueError, match='module index 4 is out of range for 4 modules'):
        IncubationRunner(cfg, modules=[4])
    all_phases = merge_args(Config.fromfile(DEMO), parse_args([DEMO, '--phase', 'all']))
    assert IncubationRunner.from_cfg(all_phases).phases == ['meta', 'incubate', 'assemble', 'finetune', 'e2e']


def test_accuracy_vs_cost_lays_the_incubation_phases_end_to_end(tmp_path):
    import matplotlib.colors
    import matplotlib.pyplot

    from mmincubation.visualization import accuracy_curves, accuracy_figure, plot_accuracy_vs_cost

    def record(phase: str, cost: float, module: int | None = None, accuracies=(50.0, 60.0)) -> None:
        history = [dict(epoch=i + 1, cost=cost * (i + 1) / len(accuracies), metrics={'accuracy/top1': a})
                   for i, a in enumerate(accuracies)]
        folder = Phase(phase, module).work_dir(tmp_path)
        folder.mkdir(parents=True)
        tested = {'accuracy/top1': 70.0} if phase == 'finetune' else {}
        (folder / 'phase_record.json').write_text(json.dumps(dict(phase=phase, module=module, cost=cost,
                                                                  history=history, test_metrics=tested)))

    record('meta', 100)
    record('incubate', 40, module=0)
    record('incubate', 60, module=1)
    record('finetune', 200)
    record('e2e', 400)
    curves = accuracy_curves(tmp_path)
    assert list(curves) == ['meta model', 'module 0', 'module 1', 'fine-tune', 'end-to-end']
    assert [c for c, _ in curves['meta model']] == [50, 100]
    assert [c for c, _ in curves['module 0']] == [120, 140]  # after the meta model
    assert [c for c, _ in curves['module 1']] == [170, 200]  # after module 0
    assert [c for c, _ in curves['fine-tune']] == [300, 400]  # the whole pipeline's cost at the end
    assert [c for c, _ in curves['end-to-end']] == [200, 400]
    assert plot_accuracy_vs_cost(tmp_path, tmp_path / 'plot.png').stat().st_size > 10_000
    fig = accuracy_figure(tmp_path)
    lines = fig.axes[0].get_lines()
    colours = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in lines}
    assert len(set(colours[name] for name in curves)) == len(curves)  # no colour shared by two curves
    assert colours['end-to-end'] == '#000000' and colours['fine-tune: test top-1 70.00'] == colours['fine-tune']
    star = next(line for line in lines if line.get_label().startswith('fine-tune: test'))
    assert list(star.get_xdata()) == [400 / 1e6] and list(star.get_ydata()) == [70.0]
    matplotlib.pyplot.close(fig)


@needs_data
def test_a_phase_killed_between_its_product_and_its_test_is_tested_on_rerun(data_root, tmp_path):
    cfg = tiny_demo_cfg(data_root, tmp_path)
    IncubationRunner(cfg, phases=('e2e', )).train()
    path = tmp_path / 'e2e' / 'phase_record.json'
    done = json.loads(path.read_text())
    weights = torch.load(tmp_path / 'e2e' / 'e2e.pth', weights_only=True)['state_dict']
    path.write_text(json.dumps(dict(done, test_metrics={})))  # as a kill after the export, before the test leaves it
    assert not IncubationRunner(cfg, phases=('e2e', )).finished('e2e')
    IncubationRunner(cfg, phases=('e2e', )).train()
    again = json.loads(path.read_text())
    assert again['test_metrics'] == done['test_metrics'] and again['history'] == done['history']
    assert again['iters'] == done['iters']  # resumed at the final epoch: nothing trained again
    rewritten = torch.load(tmp_path / 'e2e' / 'e2e.pth', weights_only=True)['state_dict']
    assert all(torch.equal(rewritten[key], value) for key, value in weights.items())


def test_records_written_before_records_named_their_module_read_the_same(tmp_path):
    """Earlier records: phase 'incubate_module_<k>', costs including those of the phases before (cost_offset)."""
    def legacy(folder: str, phase: str, cost: float, offset: float) -> None:
        (tmp_path / folder).mkdir(parents=True)
        history = [dict(epoch=1, cost=cost, metrics={'accuracy/top1': 50.0})]
        (tmp_path / folder / 'phase_record.json').write_text(json.dumps(
            dict(phase=phase, cost=cost, cost_offset=offset, history=history)))

    legacy('meta', 'meta', 100, 0)
    legacy('incubate/module_0', 'incubate_module_0', 40, 0)
    legacy('finetune', 'finetune', 340, 140)
    records = load_records(tmp_path)
    assert [(r['phase'], r['module'], r['cost'], r['history'][0]['cost']) for r in records] == [
        ('meta', None, 100, 100), ('incubate', 0, 40, 40), ('finetune', None, 200, 200)]
