"""The accuracy-at-equal-cost benchmark's bookkeeping: equal budgets, the run plan, what each run trains.

The benchmark itself (benchmarks/accuracy_at_equal_cost.py) is not a test; these check that the budgets it
compares are really equal and that its command-line overrides reach the phase configs.
"""
import argparse
from pathlib import Path

import pytest
from mmengine.config import Config, DictAction

from benchmarks.accuracy_at_equal_cost import CONFIG, Run, Schedule, cfg_options, plan
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.phase_config import recipe_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def _block_epochs(schedule: Schedule, depths: list[int]) -> tuple[int, int]:
    """(incubation, E2E) cost in block-epochs, counted phase by phase as the pipeline trains them."""
    k = len(depths)
    incubation = k * schedule.meta + sum((k - 1 + d) * schedule.incubate for d in depths)
    return incubation + sum(depths) * schedule.finetune, sum(depths) * schedule.e2e


@pytest.mark.parametrize('depths', [[4, 4, 4, 4], [2, 2, 2, 2], [3, 5, 3, 5], [6, 6]])
@pytest.mark.parametrize('epochs', [(6, 3, 3), (1, 1, 1), (4, 2, 0), (9, 4, 4)])
def test_e2e_gets_the_smallest_whole_epochs_costing_at_least_the_incubation(depths, epochs):
    schedule = Schedule.equal_cost(*epochs, depths)
    incubation, e2e = _block_epochs(schedule, depths)
    assert e2e >= incubation > e2e - sum(depths)


def test_the_demo_configs_e2e_epochs_agree_with_the_benchmarks_rule():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py'))
    schedule = Schedule.equal_cost(cfg.meta_epochs, cfg.incubate_epochs, cfg.finetune_epochs,
                                   list(build_layout(cfg).depths))
    assert schedule.e2e == cfg.e2e_epochs == cfg.incubation.e2e.train_cfg.max_epochs


def test_budgets_scale_every_incubation_phase_and_keep_at_least_one_epoch():
    base = Schedule.equal_cost(6, 3, 3, [4] * 4)
    assert base == Schedule(6, 3, 3, 10)
    assert base.scaled(0.5, [4] * 4) == Schedule.equal_cost(3, 2, 2, [4] * 4)  # round(1.5) == 2
    assert base.scaled(0.1, [4] * 4) == Schedule.equal_cost(1, 1, 1, [4] * 4)


def test_the_plan_runs_each_pipeline_once():
    runs = plan([0, 1, 2], [1.0, 0.25, 0.1], [0.5, 1.0, 1.5], dmt=True)
    keys = [(r.seed, r.fraction, r.budget, r.dmt) for r in runs]
    assert len(keys) == len(set(keys)) == 3 * 3 + 3 + 2
    assert {r.budget for r in runs if r.experiment == 'curve'} == {0.5, 1.5}  # budget 1 comes from equal-cost
    assert all(r.fraction == 1.0 and r.budget == 1.0 for r in runs if r.dmt)
    names = {r.name(Schedule.equal_cost(6, 3, 3, [4] * 4)) for r in runs if r.budget == 1.0}
    assert len(names) == 3 * 3 + 3


def _with_options(config: Path, options: list[str]) -> Config:
    """The config as tools/train.py sees it with these ``--cfg-options``."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)
    cfg.work_dir = 'unused'
    return cfg


def test_a_runs_overrides_reach_every_phase():
    schedule = Schedule(5, 2, 1, 7)
    cfg = _with_options(CONFIG, cfg_options(Run('equal-cost', 2, 0.25, 1.0), schedule, train_images=15000))
    assert cfg.randomness.seed == 2
    epochs = {phase: phase_recipe(cfg, phase, module=0 if phase == 'incubate' else None).train_cfg.max_epochs
              for phase in ('meta', 'incubate', 'finetune', 'e2e')}
    assert epochs == dict(meta=5, incubate=2, finetune=1, e2e=7)
    for phase in ('meta', 'incubate', 'finetune', 'e2e'):
        cfg_phase = phase_recipe(cfg, phase, module=1 if phase == 'incubate' else None)
        assert cfg_phase.train_dataloader.dataset.indices == 3750
        assert cfg_phase.model.backbone.arch['embed_dims'] == 32


def test_a_dmt_run_splits_only_module_incubation_with_its_seed():
    dmt_config = CONFIG.with_name(CONFIG.stem + '_dmt.py')
    cfg = _with_options(dmt_config, cfg_options(Run('dmt', 1, 1.0, 1.0, dmt=True), Schedule(5, 2, 1, 7), 15000))
    for module in range(4):
        dataset = phase_recipe(cfg, 'incubate', module=module).train_dataloader.dataset
        assert dataset.type == 'mmincubation.ClassBalancedSplitDataset'
        assert (dataset.split, dataset.num_splits, dataset.seed) == (module, 4, 1)
        assert dataset.dataset.indices == 15000
    for phase in ('meta', 'finetune'):
        assert phase_recipe(cfg, phase).train_dataloader.dataset.type == 'mmincubation.CompressedFashionMNIST'


# ------------------------------------------------------------------- benchmarks/where_incubation_wins.py

def test_where_incubation_wins_gives_every_method_the_incubation_pipelines_cost():
    from benchmarks.where_incubation_wins import Setting, block_epochs, e2e_runs
    for depth in (16, 64):
        setting = Setting(depth, 0, 1.0, 1.0)
        schedule = Schedule.equal_cost(6, 2, 2, setting.module_depths())
        incubation = block_epochs(schedule, setting.module_depths())
        assert incubation == _block_epochs(schedule, setting.module_depths())[0]
        runs = e2e_runs(setting, schedule)
        for method in ('e2e', 'meta', 'shallow'):  # equal cost, rounded up to whole epochs
            blocks, epochs = runs[method]
            assert incubation <= blocks * epochs < incubation + blocks, method
        assert runs['meta'][0] == 4 and runs['shallow'][0] == depth // 4
        assert runs['shallow-epochs'] == (depth // 4, runs['e2e'][1])  # equal epochs, a quarter of the cost


def test_where_incubation_wins_plans_the_grid_once_and_its_overrides_reach_the_phases(tmp_path):
    from benchmarks.where_incubation_wins import METHODS, Setting, commands, plan
    jobs = plan([16, 64], [0, 1, 2], [0.5, 1.0, 2.0], 64, 1.0, [1.0, 0.25], refs=True)
    assert len(jobs) == len(set(jobs))
    deep_main = [m for s, m in jobs if s == Setting(64, 0, 1.0, 1.0)]
    assert deep_main == list(METHODS)  # references at the main depth, first seed, full data
    main = ['scratch', 'grown', 'stack', 'grow', 'e2e']
    assert [m for s, m in jobs if s == Setting(64, 1, 1.0, 1.0)] == main + ['stack-down', 'grow-down']
    assert {m for s, m in jobs if s == Setting(64, 0, 0.25, 1.0)} == set(main)
    assert {m for s, m in jobs[:5]} == set(main) and jobs[-1][1] == 'shallow-epochs'
    for sharing in ('grown', 'stack', 'grow'):  # after the scratch run whose meta model they share
        assert [m for _, m in jobs].index(sharing) > [m for _, m in jobs].index('scratch')
    assert {s.seed for s, _ in jobs if (s.depth, s.budget, s.fraction) == (64, 1.0, 1.0)} == {0, 1, 2}
    assert {s.seed for s, _ in jobs if s.depth == 16} == {0} and {s.fraction for s, _ in jobs} == {1.0, 0.25}
    assert [m for s, m in jobs if s == Setting(16, 0, 1.0, 0.5)] == main

    setting = Setting(64, 2, 0.25, 1.0)
    schedule = Schedule.equal_cost(6, 2, 2, setting.module_depths())
    grown = commands(setting, 'grown', schedule, CONFIG, 5000, tmp_path)[0]
    cfg = _with_options(CONFIG, grown[grown.index('--cfg-options') + 1:])
    hybrid = phase_recipe(cfg, 'incubate', module=3)
    assert hybrid.model.module_init == 'meta' and hybrid.model.backbone.arch['num_layers'] == 3 + 16
    assert hybrid.train_cfg.max_epochs == 2 and hybrid.train_dataloader.dataset.indices == 1250
    assert cfg.randomness.seed == 2
    shallow = commands(setting, 'shallow', schedule, CONFIG, 5000, tmp_path)[0]
    cfg = _with_options(CONFIG, shallow[shallow.index('--cfg-options') + 1:])
    e2e = phase_recipe(cfg, 'e2e')
    assert e2e.model.backbone.arch['num_layers'] == 16
    assert e2e.train_cfg.max_epochs * 16 >= (4 * 6 + 4 * (3 + 16) * 2 + 64 * 2)
    for peer in ('stack', 'grow'):  # the budget left after the meta model, rounded up to whole epochs
        command = commands(setting, peer, schedule, CONFIG, 5000, tmp_path)[0]
        assert command[command.index('--phase') + 1] == peer
        recipe = phase_recipe(_with_options(CONFIG, command[command.index('--cfg-options') + 1:]), peer)
        left = 4 * (3 + 16) * 2 + 64 * 2
        assert left <= recipe.train_cfg.max_epochs * 64 < left + 64
        assert recipe.model.growth == peer and recipe.model.backbone.arch['num_layers'] == 64
        # the meta model it shares is the grown run's: the same meta recipe, so the copied product fits
        peer_cfg = _with_options(CONFIG, command[command.index('--cfg-options') + 1:])
        grown_cfg = _with_options(CONFIG, grown[grown.index('--cfg-options') + 1:])
        assert recipe_fingerprint(phase_recipe(peer_cfg, 'meta')) == recipe_fingerprint(phase_recipe(grown_cfg, 'meta'))
        # rounded down: no more cost than incubation's, at most one epoch of the full model less
        command = commands(setting, f'{peer}-down', schedule, CONFIG, 5000, tmp_path)[0]
        down = phase_recipe(_with_options(CONFIG, command[command.index('--cfg-options') + 1:]), peer)
        assert down.train_cfg.max_epochs * 64 <= left < (down.train_cfg.max_epochs + 1) * 64


def test_where_incubation_wins_calls_a_margin_inside_the_seed_spread_a_tie():
    from benchmarks.where_incubation_wins import verdicts
    rows = [dict(depth=16, fraction=1.0, budget=1.0, method=m, top1_mean=sum(t) / 3, top1=t, seeds=[0, 1, 2])
            for m, t in (('grown', [80.0, 81.0, 82.0]), ('stack', [79.0, 81.5, 81.0]), ('e2e', [70.0, 71.0, 72.0]))]
    (line, ) = verdicts(rows)
    assert line.startswith('depth 16, 100% data, budget 1: incubation (grown modules) is best')
    assert 'over stack (G_stack) + E2E (a tie)' in line and '+10.00 +- 0.00 over E2E (a win)' in line


# ------------------------------------------------------------------- benchmarks/grow_from_pretrained.py

def test_grow_from_pretrained_runs_the_peers_from_the_source_made_meta_model_at_the_same_new_cost(tmp_path):
    from benchmarks.grow_from_pretrained import ARMS, Setting, commands
    setting = Setting(0, 8, 4, 32, 6, 2, 2, 2500)
    assert {'stack', 'grow'} <= set(ARMS)
    for peer in ('stack', 'grow'):
        make_meta, train = commands(setting, peer, CONFIG, tmp_path)
        assert make_meta[1].endswith('make_meta.py') and make_meta[2].endswith('source/e2e/e2e.pth')
        assert train[train.index('--phase') + 1:train.index('--cfg-options')] == [peer]
        recipe = phase_recipe(_with_options(CONFIG, train[train.index('--cfg-options') + 1:]), peer)
        assert recipe.train_cfg.max_epochs * 32 >= setting.new_cost() > (recipe.train_cfg.max_epochs - 1) * 32


def test_grow_from_pretrained_width_growth_trains_the_source_narrow_and_every_target_arm_wide(tmp_path):
    from benchmarks.grow_from_pretrained import ARMS, Setting, commands
    setting = Setting(0, 8, 4, 32, 6, 2, 2, 2500, source_width=32, target_width=64)
    assert 'w32to64' in setting.name()
    for arm in ARMS:
        train = commands(setting, arm, CONFIG, tmp_path)[-1]
        cfg = _with_options(CONFIG, train[train.index('--cfg-options') + 1:])
        width = 32 if arm == 'source' else 64
        arch = cfg.model.backbone.arch
        assert (arch.embed_dims, arch.num_heads, arch.feedforward_channels, cfg.model.head.in_channels) == (
            width, width // 16, 4 * width, width), arm
        assert build_layout(cfg).num_modules == (1 if arm == 'source' else setting.modules(arm))


def test_grow_from_pretrained_arms_keeps_the_source_every_other_arm_reads():
    from benchmarks.grow_from_pretrained import plan
    assert plan([0, 1], True, False, ['pretrained', 'scratch-meta']) == [
        (0, 'source'), (0, 'pretrained'), (0, 'scratch-meta'), (1, 'source'), (1, 'pretrained'), (1, 'scratch-meta')]
    assert (0, 'pretrained-all') in plan([0], True, False)


def test_grow_from_pretrained_names_the_best_way_to_the_deep_model_with_paired_margins():
    from benchmarks.grow_from_pretrained import verdicts
    rows = [dict(arm=arm, top1_mean=sum(t) / 3, top1=t, seeds=[0, 1, 2])
            for arm, t in (('source', [90.0, 90.0, 90.0]), ('pretrained', [66.0, 67.0, 66.5]),
                           ('grow', [71.0, 70.5, 71.5]), ('e2e', [47.0, 46.0, 48.0]))]
    best = verdicts(rows, 8)[-1]
    assert best.startswith('best at the new cost: from pretrained, K=4, grown + E2E (+4.50 +- 0.87 over from '
                           'pretrained, K=4 of 8 blocks (a win)')  # the source is no way to the deep model
    assert '+24.00 +- 0.50 over (a) E2E at the new cost (a win)' in best
