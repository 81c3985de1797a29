"""Bad inputs to the command-line tools: one line naming the file and what was expected, nothing written or lost.

A user's mistakes, tried on tiny checkpoints made here: files that are not checkpoints (text, JSON, a
pickle, a truncated or empty file, an official or timm checkpoint where ours is expected), outputs that
are an input (also through ``./``, a symbolic or a hard link) or a folder, modules of another config,
broken phase records, and arguments a benchmark cannot run with. Every test snapshots the folder and
checks that nothing in it changed.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from conftest import tiny_classifier_cfg
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.checkpoint import META_KEY, CheckpointError, load_weights, save_atomic
from mmincubation.engine.runner import Phase, build_layout
from tools.analysis_tools.summarize_incubation import main as summarize
from tools.assemble import main as assemble_cli


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root``: bytes of a file, the target of a link, None for a folder."""
    return {str(path.relative_to(root)): (os.readlink(path) if path.is_symlink() else
                                          path.read_bytes() if path.is_file() else None)
            for path in sorted(root.rglob('*'))}


def write_config(path: Path, num_modules: int = 2, width: int = 16) -> Path:
    """A whole-pipeline config of a 4-block ViT (16x16 images) split into ``num_modules`` modules."""
    model = tiny_classifier_cfg(4)
    model['backbone']['arch']['embed_dims'] = model['head']['in_channels'] = width
    path.write_text(f'model = {model!r}\noptim_wrapper = dict(optimizer=dict(type="AdamW", lr=1e-3))\n'
                    f'train_cfg = dict(by_epoch=True, max_epochs=1)\nincubation = dict(num_modules={num_modules})\n'
                    f'work_dir = {str(path.parent / "work")!r}\n')
    return path


def write_modules(config: Path, prefix: str) -> list[Path]:
    """The config's model split into tagged module files, as the incubate phase exports them."""
    cfg = Config.fromfile(str(config))
    layout = build_layout(cfg)
    state = MODELS.build(cfg.model).state_dict()
    return [save_atomic(dict(meta={META_KEY: dict(phase='incubate', layout=list(layout.depths), module=k)},
                             state_dict={key: v for key, v in state.items() if layout.module_of(key) == k}),
                        config.parent / f'{prefix}{k}.pth') for k in range(layout.num_modules)]


@pytest.fixture
def pipeline(tmp_path) -> tuple[Path, list[Path]]:
    config = write_config(tmp_path / 'tiny.py')
    return config, write_modules(config, 'module_')


def assemble_argv(config: Path, modules: list[Path], out: str | Path) -> list[str]:
    return [str(config), '--modules', *map(str, modules), '--out', str(out)]


# --- outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize('out', ['module', 'dot path', 'symlink', 'hard link', 'config'])
def test_an_output_that_is_an_input_is_refused_before_anything_is_read(pipeline, tmp_path, out):
    config, modules = pipeline
    (tmp_path / 'notes.txt').write_text('not a checkpoint')  # would fail first if the modules were read
    target = {'module': modules[0], 'dot path': tmp_path / '.' / modules[1].name, 'symlink': tmp_path / 'link.pth',
              'hard link': tmp_path / 'hard.pth', 'config': config}[out]
    if out == 'symlink':
        os.symlink(modules[0], target)
    if out == 'hard link':
        os.link(modules[1], target)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=r'^error: output .* would overwrite the input .*(module_[01]\.pth|tiny\.py); '
                                         'choose another output path$'):
        assemble_cli(assemble_argv(config, [*modules, tmp_path / 'notes.txt'], target))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('trailing_slash', [False, True], ids=['existing folder', 'new/ (trailing slash)'])
def test_an_output_folder_is_refused_and_nothing_is_written(pipeline, tmp_path, trailing_slash):
    config, modules = pipeline
    out = f'{tmp_path / "new"}/' if trailing_slash else tmp_path
    before = snapshot(tmp_path)
    message = r'^error: output .* is a folder, expected a file path \(e\.g\. .*name\.pth\)$'
    with pytest.raises(SystemExit, match=message):
        assemble_cli(assemble_argv(config, modules, out))
    with pytest.raises(CheckpointError, match='is a folder, expected a file path'):
        save_atomic(dict(state_dict={}), out)
    assert snapshot(tmp_path) == before


def test_atomic_writes_keep_links_and_give_ordinary_permissions(tmp_path):
    """A file replaced through a link stays linked; a new file is readable by others as open() makes it."""
    mask = os.umask(0o022)
    try:
        save_atomic(dict(state_dict={'w': torch.ones(1)}), tmp_path / 'real.pth')
        os.symlink(tmp_path / 'real.pth', tmp_path / 'link.pth')
        save_atomic(dict(state_dict={'w': torch.zeros(1)}), tmp_path / 'link.pth')
    finally:
        os.umask(mask)
    assert (tmp_path / 'link.pth').is_symlink()
    assert torch.equal(load_weights(tmp_path / 'real.pth')['state_dict']['w'], torch.zeros(1))
    assert stat.S_IMODE((tmp_path / 'real.pth').stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ['link.pth', 'real.pth']  # no temporary file left


# --- foreign and broken files -------------------------------------------------------------------


def _truncated(path: Path) -> None:
    torch.save(dict(state_dict={'w': torch.ones(1000)}), path)
    path.write_bytes(path.read_bytes()[:700])


def _official(path: Path) -> None:
    torch.save(dict(model={'cls_token': torch.zeros(1, 1, 16)}, model_stages=[], args=argparse.Namespace(lr=1)), path)


FOREIGN = {
    'text': (lambda p: p.write_text('hello\n'), r"not written by torch\.save \(it starts with b'hello\\n'"),
    'JSON': (lambda p: p.write_text('{"a": 1}'), r'not written by torch\.save \(it starts with b\'\{"a": 1\}\''),
    'pickle of a list': (lambda p: p.write_bytes(pickle.dumps([1, 2], protocol=4)),
                         r'not written by torch\.save \(a plain pickle'),
    'empty': (lambda p: p.write_bytes(b''), r'the file is empty \(0 bytes\)'),
    'truncated': (_truncated, r'truncated, corrupt or still being written \(an incomplete zip'),
    'official': (_official, r'it pickles argparse\.Namespace, which torch\.load\(weights_only=True\) refuses: '
                            r'official Deep Incubation checkpoints .* convert them with tools/convert_official\.py'),
    'model dict': (lambda p: torch.save(dict(model={'w': torch.ones(1)}), p),
                   r'has no "state_dict" \(keys: \[\'model\'\]\); it looks like an official .*convert_official'),
    'state_dict a list': (lambda p: torch.save(dict(state_dict=[1, 2]), p), r'"state_dict" is a list, expected a dict'),
}


@pytest.mark.parametrize('case', sorted(FOREIGN))
def test_a_foreign_file_is_refused_in_one_line_naming_it(pipeline, tmp_path, case):
    config, modules = pipeline
    make, message = FOREIGN[case]
    bad = tmp_path / 'bad.pth'
    make(bad)
    with pytest.raises(CheckpointError, match=message) as error:
        load_weights(bad)
    assert str(bad) in str(error.value) and '\n' not in str(error.value)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=message) as exit_:
        assemble_cli(assemble_argv(config, [bad, modules[1]], tmp_path / 'out.pth'))
    assert '\n' not in str(exit_.value)
    assert snapshot(tmp_path) == before


def test_modules_of_another_layout_are_refused_even_when_their_shapes_fit(tmp_path):
    config = write_config(tmp_path / 'tiny.py', num_modules=2)
    modules = write_modules(write_config(tmp_path / 'k4.py', num_modules=4), 'k4_module_')
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=r'k4_module_0\.pth was incubated for a vit backbone, layout \(1, 1, 1, 1\), '
                                         r'the config asks for a vit backbone, layout \(2, 2\)'):
        assemble_cli(assemble_argv(config, modules, tmp_path / 'out.pth'))
    assert snapshot(tmp_path) == before


def test_a_module_with_a_broken_tag_is_refused(pipeline, tmp_path):
    config, modules = pipeline
    checkpoint = torch.load(modules[0], weights_only=True)
    del checkpoint['meta'][META_KEY]['layout']
    torch.save(checkpoint, modules[0])
    with pytest.raises(SystemExit, match=r'module_0\.pth has a broken mmincubation tag .*expected the layout'):
        assemble_cli(assemble_argv(config, modules, tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('config, message', [
    ('missing.py', r'^error: config .*missing\.py does not exist$'),
    ('module_0.pth', r'^error: config .*module_0\.pth is not a config file: expected \.py'),
])
def test_a_config_that_is_not_one_is_named(pipeline, tmp_path, config, message):
    _, modules = pipeline
    with pytest.raises(SystemExit, match=message):
        assemble_cli(assemble_argv(tmp_path / config, modules, tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


# --- summarize_incubation -----------------------------------------------------------------------


def write_records(work_dir: Path) -> list[Path]:
    """The phase records of a finished pipeline with K=1 (as PhaseRecordHook writes them)."""
    paths = []
    for phase, module, cost in [('meta', None, 100.), ('incubate', 0, 50.), ('finetune', None, 150.),
                                ('e2e', None, 300.)]:
        history = [dict(epoch=1, iter=4, images=64, cost=cost, metrics={'accuracy/top1': 50.0})]
        record = dict(phase=phase, module=module, finished=True, num_blocks=2, iters=4, images=64, cost=cost,
                      wall_seconds=1.0, seconds_per_iter=0.25, history=history,
                      test_metrics={'accuracy/top1': 51.0} if phase in ('finetune', 'e2e') else {})
        path = Phase(phase, module).work_dir(work_dir) / 'phase_record.json'
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
        paths.append(path)
    return paths


BAD_WORK_DIRS = {
    'missing': (lambda w: None, r'work dir .*work does not exist$'),
    'a file': (lambda w: w.write_text('x'), r'work dir .*work is a file, expected a pipeline work dir'),
    'no records': (lambda w: w.mkdir(), r'no phase_record\.json under .*work: not a pipeline work dir'),
    'truncated record': (lambda w: (write_records(w), (w / 'e2e/phase_record.json').write_text('{"phase": "e2')),
                         r'phase record .*e2e/phase_record\.json is not readable JSON'),
    'record of a list': (lambda w: (write_records(w), (w / 'e2e/phase_record.json').write_text('[1, 2]')),
                         r'phase record .*e2e/phase_record\.json holds a JSON list, not an object'),
    'other JSON': (lambda w: (write_records(w), (w / 'meta/phase_record.json').write_text('{"a": 1}')),
                   r"phase record .*meta/phase_record\.json lacks \['phase', 'history'"),
}


@pytest.mark.parametrize('case', sorted(BAD_WORK_DIRS))
def test_summary_of_a_bad_work_dir_names_it(tmp_path, case):
    make, message = BAD_WORK_DIRS[case]
    make(tmp_path / 'work')
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match='^error: ' + message):
        summarize([str(tmp_path / 'work')])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('out, message', [
    ('work', r'plot .*work is a folder, expected a file path \(e\.g\. .*accuracy_vs_cost\.png\)'),
    ('work/e2e/phase_record.json', r'plot .*phase_record\.json would overwrite the input .*e2e/phase_record\.json'),
    ('plot', r'plot .*plot has no file name suffix; expected an image file name ending in \.png'),
    ('plot.pth', r'plot .*plot\.pth has \.pth; expected an image file name ending in \.png'),
])
def test_summary_refuses_a_plot_path_it_cannot_write(tmp_path, out, message):
    write_records(tmp_path / 'work')
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match='^error: ' + message):
        summarize([str(tmp_path / 'work'), '--out', str(tmp_path / out)])
    assert snapshot(tmp_path) == before


def test_summary_plot_goes_into_a_new_folder(tmp_path, capsys):
    write_records(tmp_path / 'work')
    summarize([str(tmp_path / 'work'), '--out', str(tmp_path / 'plots' / 'run.png')])
    assert (tmp_path / 'plots' / 'run.png').read_bytes().startswith(b'\x89PNG')
    assert f'plot: {tmp_path / "plots" / "run.png"}' in capsys.readouterr().out


# --- benchmarks/step_cost.py --------------------------------------------------------------------


@pytest.mark.parametrize('argv, message', [
    (['--iters', '0'], 'argument --iters: 0 is below 1'),
    (['--batch', '0'], 'argument --batch: 0 is below 1'),
    (['--device', 'tpu'], '--device tpu: expected cpu, cuda or cuda:N'),
    (['--device', 'cpu', '--amp'], '--amp needs a CUDA device'),
])
def test_step_cost_refuses_arguments_it_cannot_run_with(tmp_path, capsys, argv, message):
    from benchmarks.step_cost import main as step_cost
    with pytest.raises(SystemExit) as exit_:
        step_cost([str(write_config(tmp_path / 'tiny.py')), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA device')
def test_step_cost_refuses_cuda_without_a_cuda_device(tmp_path, capsys):
    from benchmarks.step_cost import main as step_cost
    with pytest.raises(SystemExit) as exit_:
        step_cost([str(write_config(tmp_path / 'tiny.py')), '--device', 'cuda'])
    assert exit_.value.code == 2 and 'torch sees no CUDA device' in capsys.readouterr().err


def test_step_cost_names_a_missing_config_and_a_failing_network(tmp_path, capsys):
    from benchmarks.step_cost import main as step_cost
    with pytest.raises(SystemExit, match=r'^error: config .*nowhere\.py does not exist$'):
        step_cost([str(tmp_path / 'nowhere.py'), '--device', 'cpu'])
    broken = write_config(tmp_path / 'tiny.py')  # the layout is fine, the head cannot be built
    broken.write_text(broken.read_text() + 'model["head"]["type"] = "NoSuchHead"\n')
    with pytest.raises(SystemExit, match=r'^error: measuring the meta network failed \(exit status 1\): .*NoSuchHead'):
        step_cost([str(broken), '--device', 'cpu', '--batch', '2', '--iters', '1', '--warmup', '0'])
    assert 'Traceback' in capsys.readouterr().err  # the child's own report comes first
