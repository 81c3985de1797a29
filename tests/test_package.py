"""The package ships its configs, tools and model index as mmpretrain's does (mmincubation/.mim, setup.py):
a wheel installed into another environment trains a user's config that inherits ours from any folder, and
the editable dev checkout links the same files."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import mmengine
import pytest
import yaml
from mmengine.config import Config
from mmpretrain.registry import MODELS
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import mmincubation
from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT

ROOT = Path(__file__).resolve().parents[1]
MIM = Path(mmincubation.__file__).parent / '.mim'
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')

#: A user's own config, in a folder of theirs: the demo pipeline inherited from the installed package, sized to
#: seconds (2 blocks of width 16, K=2, 64 training images, 1 epoch per phase).
USER_CONFIG = """\
_base_ = [{base!r}]
data_root = {data_root!r}
model = dict(backbone=dict(arch=dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32)),
             head=dict(in_channels=16))
train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root, indices=64))
val_dataloader = dict(batch_size=64, dataset=dict(data_root=data_root, indices=64))
test_dataloader = dict(batch_size=64, dataset=dict(data_root=data_root, indices=64))
param_scheduler = [dict(type='mmincubation.TimmCosineLR', warmup=1, warmup_lr=1e-6, eta_min=1e-5, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1))
incubation = dict(num_modules=2, **{{phase: dict(train_cfg=dict(max_epochs=1))
                                     for phase in ('meta', 'incubate', 'finetune', 'e2e')}})
"""


def tiny_pipeline_config(base: str, data_root: str) -> str:
    """:data:`USER_CONFIG` inheriting ``base`` (``mmincubation::...`` or a path), reading ``data_root``."""
    return USER_CONFIG.format(base=base, data_root=data_root)


PRODUCTS = ['meta/meta.pth', 'incubate/module_0/module_0.pth', 'incubate/module_1/module_1.pth', 'assembled.pth',
            'finetune/finetuned.pth', 'e2e/e2e.pth']


def source_tree(dest: Path) -> Path:
    """The files of a clean checkout (tracked and untracked, less git-ignored), copied to ``dest``: the wheel is
    built there, so the build neither needs nor writes anything else of this checkout (build/, egg-info)."""
    listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split('\0')
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file someone deleted is not in the tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def environment_without_checkout() -> dict[str, str]:
    """The environment for a process that must not see this checkout (pytest puts it on PYTHONPATH)."""
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'PYTHONHOME')}
    env['OMP_NUM_THREADS'] = '1'  # tiny models: one thread is faster than two contending
    return env


def stack_venv(venv: Path) -> tuple[Path, Path]:
    """A fresh environment at ``venv`` that has the installed stack but not this package: (python, site-packages).

    A path line to this venv's site-packages, whose own .pth files, among them the editable install of this
    checkout, are not run: a user's environment with the OpenMMLab stack, as far as pip and imports can tell.
    """
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    site = Path(subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / 'openmmlab_stack.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    return python, site


def pinned_versions() -> dict[str, str]:
    """The versions tools/install.sh pins: ``name==version`` lines of requirements/*.txt and its MMCV_VERSION."""
    pins = {}
    for path in (ROOT / 'requirements').glob('*.txt'):
        for line in path.read_text().splitlines():
            requirement = line.split('#')[0].strip()
            if '==' in requirement:
                name, version = requirement.split('==')
                pins[canonicalize_name(name)] = version.split(',')[0]
    (mmcv, ) = re.findall(r'^MMCV_VERSION=(\S+)$', (ROOT / 'tools' / 'install.sh').read_text(), re.MULTILINE)
    assert pins.get('mmcv', mmcv) == mmcv  # the constraint and the script agree
    pins['mmcv'] = mmcv
    return pins


def test_pip_install_keeps_an_installed_stack(tmp_path):
    """The README's "already have the stack" path: ``pip install .`` and ``pip install -e .`` into an environment
    with the pinned stack install mmincubation alone (pip may not reach an index: anything else would fail), and
    the package's requirements name no torch, whose CUDA build is the user's, and accept every pinned version."""
    python, _ = stack_venv(tmp_path / 'venv')
    source = source_tree(tmp_path / 'src')
    pins = pinned_versions()
    for editable in ([], ['-e']):
        report = tmp_path / f'report{"".join(editable)}.json'
        run = subprocess.run([python, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation', '-q',
                              '--report', str(report), *editable, str(source)],
                             capture_output=True, text=True, env=environment_without_checkout())
        assert run.returncode == 0, run.stderr[-3000:]
        (install, ) = json.loads(report.read_text())['install']
        assert install['metadata']['name'] == 'mmincubation'
        assert install['download_info']['dir_info'].get('editable', False) == bool(editable)
        requirements = [Requirement(line) for line in install['metadata']['requires_dist']]
        names = {canonicalize_name(requirement.name) for requirement in requirements}
        assert not names & {'torch', 'torchvision'}, names
        assert {'mmengine', 'mmpretrain', 'mmcv', 'mmdet', 'mmsegmentation'} <= names
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name in pins:
                assert requirement.specifier.contains(pins[name]), (str(requirement), pins[name])


@needs_data
def test_wheel_installed_elsewhere_trains_a_user_config_from_any_folder(data_root, tmp_path):
    wheels = tmp_path / 'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                    str(wheels), str(source_tree(tmp_path / 'src'))], check=True, capture_output=True)
    (wheel, ) = wheels.glob('mmincubation-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ('configs/incubate_demo_fashion_mnist.py', 'configs/_base_/incubation_runner.py',
                    'configs/metafiles/vit_in1k.yml',
                    'configs/downstream/mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py', 'tools/train.py',
                    'tools/analysis_tools/summarize_incubation.py', 'model-index.yml'):
        assert f'mmincubation/.mim/{shipped}' in names, shipped
    assert not [name for name in names if '__pycache__' in name or name.endswith('.pyc')]

    python, site = stack_venv(tmp_path / 'venv')
    env = environment_without_checkout()
    subprocess.run([python, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(wheel)], check=True,
                   capture_output=True, env=env)
    installed = site / 'mmincubation'
    assert (installed / '.mim' / 'configs').is_dir() and not (installed / '.mim' / 'configs').is_symlink()

    user = tmp_path / 'user_project'
    user.mkdir()
    (user / 'user_cfg.py').write_text(tiny_pipeline_config('mmincubation::incubate_demo_fashion_mnist.py', data_root))
    run = subprocess.run([python, str(installed / '.mim' / 'tools' / 'train.py'), 'user_cfg.py', '--phase', 'all'],
                         cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert f'{installed}/__init__.py' in subprocess.run(
        [python, '-c', 'import mmincubation; print(mmincubation.__file__)'], cwd=user, env=env, check=True,
        capture_output=True, text=True).stdout  # the package came from the wheel, not from this checkout
    work_dir = user / 'work_dirs' / 'user_cfg'
    for product in PRODUCTS:
        assert (work_dir / product).is_file(), product
    assert 'val top-1' in log and 'test top-1' in log  # the summary table: a row per phase run
    for phase in ('meta', 'incubate module 0', 'incubate module 1', 'finetune', 'e2e'):
        assert re.search(rf'INFO - {phase} +\d+ +\d+ ', log), phase


def test_dev_checkout_links_the_mim_files():
    """The editable install (setup.py in ``editable_mode``) links ``.mim`` into the checkout: edits are live."""
    for name in ('configs', 'tools', 'model-index.yml'):
        assert (MIM / name).is_symlink() and (MIM / name).resolve() == ROOT / name, \
            f'{MIM / name} does not link {ROOT / name}: reinstall (make install)'


def test_mmincubation_bases_load_from_any_folder(tmp_path, monkeypatch):
    """``mmincubation::`` bases, top-level and in a folder, pipeline and downstream, from outside the checkout."""
    monkeypatch.chdir(tmp_path)
    user = tmp_path / 'user_cfg.py'
    user.write_text("_base_ = ['mmincubation::incubate_demo_fashion_mnist.py']\n"
                    "incubation = dict(num_modules=2)\n")
    cfg = Config.fromfile(str(user))
    assert cfg.incubation.num_modules == 2 and cfg.incubation.module_init == 'meta'
    assert cfg.runner_type == 'mmincubation.IncubationRunner'
    assert cfg.train_dataloader.dataset.type == 'mmincubation.CompressedFashionMNIST'
    assert MODELS.build(cfg.model).backbone.num_layers == 8  # mmpretrain's types, in the config's default scope

    benchmark = tmp_path / 'benchmark_cfg.py'
    benchmark.write_text("_base_ = 'mmincubation::benchmarks/incubate_deep-vit-16x32-p7_fashion-mnist.py'\n")
    assert Config.fromfile(str(benchmark)).model.backbone.arch.num_layers == 16

    downstream = tmp_path / 'downstream_cfg.py'
    downstream.write_text("_base_ = 'mmincubation::downstream/mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py'\n"
                          "checkpoint = 'my_incubated_vit_b.pth'\n")
    cfg = Config.fromfile(str(downstream))
    assert cfg.runner_type == 'mmincubation.DownstreamRunner' and cfg.default_scope == 'mmdet'
    # Other packages' bases are MMEngine's own look-up, unchanged.
    assert 'mmincubation' in mmengine.config.utils.PKG2PROJECT
    with pytest.raises(FileNotFoundError):
        Config.fromfile(str(_write(tmp_path / 'missing.py', "_base_ = 'mmincubation::no_such_config.py'\n")))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_model_index_names_every_config_family():
    """model-index.yml imports the metafiles; they name every pipeline, baseline and downstream config there is."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    metafiles = [yaml.safe_load((ROOT / path).read_text()) for path in index['Import']]
    collections = {collection['Name'] for metafile in metafiles for collection in metafile['Collections']}
    models = [model for metafile in metafiles for model in metafile['Models']]
    listed = {model['Config'] for model in models}
    assert {model['In Collection'] for model in models} == collections
    for config in listed:
        assert (ROOT / config).is_file(), config
    configs = ROOT / 'configs'
    expected = {str(path.relative_to(ROOT)) for pattern in ('**/incubate_*.py', '**/e2e_*.py', 'downstream/**/*.py')
                for path in configs.glob(pattern) if '_base_' not in path.parts}
    assert expected <= listed, sorted(expected - listed)


def test_a_torch_older_than_the_fixes_need_is_refused_in_one_line():
    """setup.py names no torch, so ``import mmincubation`` checks it: torch<2.6 lacks what compat.py uses."""
    from mmincubation.compat import check_torch_version

    for fits in ('2.6.0', '2.13.0', '2.13.0+cu128'):
        check_torch_version(fits)
    with pytest.raises(ImportError, match=r'^mmincubation needs torch>=2\.6, found torch 2\.5\.1\+cu121: ') as error:
        check_torch_version('2.5.1+cu121')
    assert '\n' not in str(error.value)
