"""Logs a person reads (issue 19 point 5): one announcement per phase with the pipeline's ETA, one line for the
frozen parameters, the environment once and the configs in the log files only, and one pipeline in the
experiment trackers (steps on the pipeline's cost axis, not seven runs from step 0)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_pipeline

from mmincubation.engine.runner.phase_runner import frozen_summary
from mmincubation.engine.runner.progress import Progress, format_duration

TRACKED = '''
_base_ = ['./tiny.py']
custom_imports = dict(imports=['recording_vis_backend'], allow_failed_imports=False)
visualizer = dict(vis_backends=[dict(type='LocalVisBackend'), dict(type='RecordingVisBackend')])
'''


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory, data_root):
    """A tiny pipeline (2 modules, meta + incubate + assemble + finetune + e2e) run once with a tracker."""
    folder = tmp_path_factory.mktemp('logs')
    (folder / 'tiny.py').write_text(tiny_pipeline(data_root, indices=256, epochs=1, drop_path=0.0))
    (folder / 'tracked.py').write_text(TRACKED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]))
    run = subprocess.run([sys.executable, 'tools/train.py', str(folder / 'tracked.py'), '--phase', 'all',
                          '--work-dir', str(folder / 'work')], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (folder / 'console.log').write_text(run.stdout + run.stderr)
    return folder / 'work', run.stdout + run.stderr


def test_each_phase_is_announced_with_its_place_and_the_pipeline_eta(pipeline):
    _, log = pipeline
    lines = re.findall(r'phase (\d)/(\d): (.+) \((ETA[^)]*)\)', log)
    assert [(i, n, title) for i, n, title, _ in lines] == [
        ('1', '6', 'meta pretraining'), ('2', '6', 'incubate module 0 of 2'), ('3', '6', 'incubate module 1 of 2'),
        ('4', '6', 'assemble the 2 modules'), ('5', '6', 'fine-tune the assembled model'),
        ('6', '6', 'end-to-end baseline')]
    assert lines[0][3] == 'ETA once a step of each kind has run'  # nothing timed yet
    assert all(re.fullmatch(r'ETA \d+ (s|min), at \d\d:\d\d', eta) for *_, eta in lines[1:])


def test_frozen_parameters_are_one_line_per_phase_and_dumps_are_not_repeated(pipeline):
    work, log = pipeline
    assert 'is skipped since its requires_grad' not in log and 'paramwise_options --' not in log
    assert log.count('optimizer: paramwise options ') == 5 and 'weight_decay=0.0 on 22 tensors' in log
    frozen = re.findall(r'optimizer: (\d+) frozen parameter tensors \(([\d.]+) M parameters\) are not optimised: (.*)',
                        log)
    assert len(frozen) == 2  # one per module incubation: its hybrid's meta blocks are frozen
    assert all(int(count) > 0 for count, _, _ in frozen)
    # module 0's hybrid freezes meta block 1 (layers.2) and the head, module 1's the stem and meta block 0
    assert frozen[0][2] == 'backbone.layers.2, backbone.ln1, head.layers'
    assert frozen[1][2].startswith('backbone.cls_token, backbone.pos_embed, backbone.patch_embed')
    assert 'backbone.layers.0' in frozen[1][2] and 'head' not in frozen[1][2]
    assert log.count('System environment:') == 1
    assert 'Hooks will be executed in the following order' not in log and '\nConfig:' not in log
    files = sorted(work.glob('**/20*_*/20*_*.log'))
    assert len(files) == 5  # every trained phase keeps the whole stock log in its own file
    for file in files:
        text = file.read_text()
        assert 'System environment:' in text and 'Config:' in text and 'Hooks will be executed' in text
        assert 'paramwise_options -- ' in text
    assert sum('is skipped since its requires_grad=False' in file.read_text() for file in files) == 2
    assert len(log.splitlines()) < 150, len(log.splitlines())


def test_trackers_show_one_pipeline_on_the_cost_axis(pipeline):
    work, _ = pipeline
    recorded = [json.loads(line) for line in (work / 'vis_data' / 'recorded.jsonl').read_text().splitlines()]
    losses = {}
    for entry in recorded:
        label, _, name = entry['name'].rpartition('/')
        if name == 'loss':
            losses.setdefault(label, []).append(entry['step'])
    assert list(losses) == ['meta model', 'module 0', 'module 1', 'fine-tune', 'end-to-end']
    incubation = [losses[label] for label in ('meta model', 'module 0', 'module 1', 'fine-tune')]
    steps = [step for phase in incubation for step in phase]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one axis, each phase after the last
    records = {path.parent.name: json.loads(path.read_text()) for path in work.glob('**/phase_record.json')}
    assert incubation[1][0] > records['meta']['cost']  # the meta model's whole cost comes first
    assert losses['end-to-end'][0] < losses['meta model'][-1]  # the baseline is its own method: from 0
    assert {entry['pid'] for entry in recorded} and not list((work / 'meta').glob('**/recorded.jsonl'))


def test_progress_eta_counts_what_ran_per_kind():
    progress = Progress(total=4, noun='run')
    assert progress.eta([('epochs', 2)]) is None
    progress.done(('epochs', 2), 10.0)
    progress.done(('none', 0), 99.0)  # a step that trained nothing is not a rate
    assert progress.eta([('epochs', 3), ('none', 0)]) == pytest.approx(15.0)
    assert progress.eta([('iters', 1)]) is None
    assert progress.announce(2, 'x', [('epochs', 3)]).startswith('run 2/4: x (ETA 15 s, at ')
    assert [format_duration(s) for s in (45, 720, 7500)] == ['45 s', '12 min', '2 h 05 min']


def test_frozen_summary_groups_names_by_block():
    names = ['backbone.cls_token', 'backbone.layers.1.ln1.weight', 'backbone.layers.1.attn.qkv.weight',
             'head.layers.head.bias']
    line = frozen_summary(names, {'backbone.cls_token': 4, 'backbone.layers.1.ln1.weight': 6})
    assert line == ('optimizer: 4 frozen parameter tensors (0.00 M parameters) are not optimised: '
                    'backbone.cls_token, backbone.layers.1, head.layers')


def test_benchmark_runs_are_announced_with_i_of_n(tmp_path, capsys):
    """where_incubation_wins on its worker threads: each run is announced once, numbered 1..N."""
    import argparse

    from benchmarks.where_incubation_wins import Schedule, plan, run_all
    jobs = plan([16], [0], [1.0], 16, 1.0, [1.0], refs=False)
    schedules = {setting: Schedule.equal_cost(1, 1, 1, setting.module_depths()) for setting, _ in jobs}
    args = argparse.Namespace(jobs=2, config=ROOT / 'configs' / 'incubate_demo_fashion_mnist.py', train_images=64,
                              out=tmp_path, finished_only=True)
    assert run_all(jobs, schedules, args) == []  # nothing finished, nothing trained
    announced = re.findall(r'^run (\d+)/(\d+): ', capsys.readouterr().out, flags=re.M)
    assert sorted(int(i) for i, _ in announced) == list(range(1, len(jobs) + 1))
    assert {int(n) for _, n in announced} == {len(jobs)}


def test_the_accuracy_figure_is_titled_with_model_data_and_recipe(pipeline):
    import matplotlib.pyplot

    from mmincubation.visualization import accuracy_figure, figure_title
    work, _ = pipeline
    title = figure_title(work)
    assert title == ('TimmInitVisionTransformer (4 blocks, width 32), 2 modules, on CompressedFashionMNIST '
                     '(256 images)\nmeta 1 ep, modules 1 ep, fine-tune 1 ep; E2E 1 ep; AdamW lr 0.001, batch 32')
    fig = accuracy_figure(work)
    assert fig.axes[0].get_title() == title
    matplotlib.pyplot.close(fig)


def test_benchmark_bar_charts_start_at_zero_and_name_the_setting(tmp_path, monkeypatch):
    import matplotlib.pyplot

    from benchmarks.accuracy_at_equal_cost import plot
    rows = [dict(setting=s, budget=1.0, method=m, dmt=False, fraction=1.0, cost=1e6, top1_mean=t, top1_std=0.5)
            for s, m, t in (('100% data', 'incubation', 81.0), ('100% data', 'e2e', 79.0))]
    kept = []
    monkeypatch.setattr(matplotlib.pyplot, 'close', kept.append)  # keep the figure to look at it
    plot(rows, tmp_path / 'plot.png', title='tiny: 64 training images')
    (fig, ) = kept
    assert fig.axes[1].get_ylim()[0] == 0 and fig._suptitle.get_text() == 'tiny: 64 training images'
    assert (tmp_path / 'plot.png').stat().st_size > 10_000
