"""Package metadata and the MIM files (configs, tools, model-index.yml) shipped inside the package.

``pip install .`` into an environment that already has the OpenMMLab stack keeps that stack: the
requirements below are the version ranges we test against, not pins (tools/install.sh installs the
exact pins of requirements/, with mmcv's compiled ops, and then this package with ``--no-deps``).

As mmpretrain and mmdet do, the package carries ``mmincubation/.mim/{configs,tools,model-index.yml}``,
from which MMEngine reads ``_base_ = ['mmincubation::<config>']`` (mmincubation/compat.py). Their
``add_mim_extension()`` chooses copies or links from ``sys.argv`` ('develop', 'bdist_wheel'), which a
PEP 660 editable install (``setup.py editable_wheel``) never contains, so ``pip install -e .`` ships no
configs (mmdet#11020). Here the build itself decides, in ``build_py``: a wheel (``pip install .``,
``pip wheel``) gets copies in its build tree; an editable build, which setuptools marks
``editable_mode``, gets relative symlinks in the checkout (git-ignored), so the configs being edited are
the ones in use. The source tree is never written by a wheel build.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = 'mmincubation'
#: What MMEngine and MIM look for in ``<package>/.mim``, from the top of the repository.
MIM_FILES = ('configs', 'tools', 'model-index.yml')
#: Byte code and caches next to the configs and tools are not shipped.
IGNORED = shutil.ignore_patterns('__pycache__', '*.pyc', '*.pyo')


def link_mim_files(mim_dir: Path) -> None:
    """Point ``mim_dir``'s entries at the repository's files with relative symlinks (editable installs)."""
    mim_dir.mkdir(parents=True, exist_ok=True)
    for name in MIM_FILES:
        target = mim_dir / name
        relative = os.path.relpath(ROOT / name, mim_dir)
        if target.is_symlink() and os.readlink(target) == relative:
            continue
        _remove(target)
        target.symlink_to(relative, target_is_directory=(ROOT / name).is_dir())


def copy_mim_files(mim_dir: Path) -> None:
    """Copy the repository's files into ``mim_dir`` (a wheel's build tree), replacing what an earlier build left."""
    mim_dir.mkdir(parents=True, exist_ok=True)
    for name in MIM_FILES:
        source, target = ROOT / name, mim_dir / name
        _remove(target)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)
        else:
            shutil.copyfile(source, target)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


class BuildWithMimFiles(build_py):
    """``build_py`` that also provides ``mmincubation/.mim``: copies in a wheel, links in an editable install."""

    def run(self) -> None:
        super().run()
        # Set by setuptools' editable_wheel (PEP 660, setuptools>=64) on every build sub-command; older
        # setuptools (openmim's dependencies pin 60.2, and `mim install .` builds with it) has no such
        # attribute and no editable wheels: a build there is always a wheel's.
        if getattr(self, 'editable_mode', False):
            link_mim_files(ROOT / PACKAGE / '.mim')
        else:
            copy_mim_files(Path(self.build_lib) / PACKAGE / '.mim')


setup(
    name=PACKAGE,
    version='0.1.0',
    description='Deep Incubation (divide-and-conquer training of large vision backbones) for OpenMMLab',
    packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
    cmdclass={'build_py': BuildWithMimFiles},
    python_requires='>=3.9',
    license='Apache License 2.0',
    license_files=['LICENSE'],
    # The ranges we test in; the pins we test with are requirements/mminstall.txt, torch.txt and mmcv in
    # tools/install.sh. mmincubation/compat.py patches MMEngine 0.10's config look-ups; mmdet 3.3 and mmseg
    # 1.2 refuse mmcv>=2.2; MMEngine 0.10 imports pkg_resources for every `pkg::` config base, which
    # setuptools 81 removed. torch is not named, as no OpenMMLab package names it: pip would replace a
    # user's CUDA build (and break mmcv's compiled ops); compat.py refuses a torch older than 2.6 instead.
    install_requires=[
        'mmengine>=0.10.7,<0.11',
        'mmpretrain>=1.2.0,<1.3',
        'mmcv>=2.1.0,<2.2',
        'numpy',
        'setuptools<81',
    ],
    extras_require={'downstream': ['mmdet>=3.3.0,<3.4', 'mmsegmentation>=1.2.2,<1.3']},
)
