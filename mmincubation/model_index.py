"""Our configs by name in mmpretrain's model hub.

``model-index.yml`` (MIM's index: shipped as ``<package>/.mim/model-index.yml`` by setup.py, at the top of a
clone) imports one metafile per config family (``configs/metafiles/*.yml``). :func:`register_models` registers it
with mmpretrain's ``ModelHub``, as mmpretrain registers its own, so that its names work wherever mmpretrain takes
a model name::

    import mmincubation  # registers the names (mmincubation/__init__.py)
    from mmpretrain import get_model, inference_model, list_models
    list_models('incubate_vit*')                  # ['incubate_vit_b', 'incubate_vit_b_deit3', ...]
    model = get_model('incubate_demo_fashion_mnist', pretrained='work_dirs/.../finetune/finetuned.pth')
    inference_model(model, 'shoe.png')['pred_class']

No weights are released (every model's ``Weights`` is null): ``pretrained=True`` finds none, give the product
file. The metafiles' ``Parameters`` and ``FLOPs`` are ``tools/analysis_tools/get_flops.py``'s count of each config's
model (:mod:`mmincubation.complexity`).
"""
from __future__ import annotations

from pathlib import Path

#: The model index's name in a package's ``.mim`` folder and at the top of a repository (MIM's convention).
MODEL_INDEX = 'model-index.yml'
#: This package's folder, where an install puts ``.mim`` (setup.py).
PACKAGE_DIR = Path(__file__).resolve().parent


def model_index_path(package: Path = PACKAGE_DIR) -> Path:
    """The ``model-index.yml`` of the package in folder ``package``: ``<package>/.mim/model-index.yml`` where an
    install put it (setup.py: copies in a wheel, links in an editable install), else the one of the repository
    the package lies in (a clone used in place, with no install).

    Raises:
        FileNotFoundError: neither exists (naming both).
    """
    candidates = (package / '.mim' / MODEL_INDEX, package.parent / MODEL_INDEX)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f'no {MODEL_INDEX} in {candidates[0].parent} nor {candidates[1].parent}: reinstall '
                            'mmincubation (pip install .)')


_registered: list[Path] = []


def register_models() -> None:
    """Register :func:`model_index_path` with ``mmpretrain.apis.ModelHub``; once per process.

    Each model's config path becomes absolute (``config_prefix``: the index's folder, the root its paths are
    written from), so ``get_model('incubate_vit_b')`` works from any working directory. mmpretrain registers
    its own index on first use, after ours: the names do not collide (``ModelHub`` would raise on that).
    """
    if _registered:
        return
    from mmpretrain.apis import ModelHub
    index = model_index_path()
    ModelHub.register_model_index(index, config_prefix=index.parent)
    _registered.append(index)
