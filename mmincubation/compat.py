"""Fixes that the 2023-era OpenMMLab stack needs on today's torch (and for our package), each explained
where it is made.

Imported first by ``mmincubation/__init__.py``, so every entry point (tools, configs with
``custom_imports``, tests) runs with them. Nothing in site-packages is edited.
"""
from __future__ import annotations

import functools
import math
import os.path as osp
from collections.abc import Callable

import matplotlib._tight_bbox
import mmengine.analysis.complexity_analysis as mmengine_complexity
import mmengine.config.config as mmengine_config
import mmengine.config.utils as mmengine_config_utils
import mmengine.runner.activation_checkpointing as mmengine_checkpointing
import mmengine.runner.runner as mmengine_runner
import mmengine.utils.package_utils as mmengine_package_utils
import numpy as np
import torch
from mmengine.analysis.jit_handles import get_shape
from mmengine.logging import HistoryBuffer
from torch.torch_version import TorchVersion
from torch.utils.checkpoint import checkpoint

#: The oldest torch these fixes work on: :func:`allow_mmengine_checkpoints` gives
#: ``torch.serialization.add_safe_globals`` (object, name) pairs, which torch 2.6 introduced. setup.py does not
#: name torch (pip would replace a user's CUDA build and break mmcv's compiled ops), so it is checked here.
MIN_TORCH = '2.6'


def check_torch_version(version: str = torch.__version__) -> None:
    """Raise ``ImportError`` (one line) when torch ``version`` (e.g. ``'2.5.1+cu121'``) is older than
    :data:`MIN_TORCH`."""
    if TorchVersion(version) < MIN_TORCH:
        raise ImportError(f'mmincubation needs torch>={MIN_TORCH}, found torch {version}: install a newer torch '
                          '(with its torchvision and an mmcv 2.1.0 built for it) first')


#: The statistics every ``HistoryBuffer`` registers in its ``__init__`` (mmengine/logging/history_buffer.py).
#: The class-level ``_statistics_methods`` dict is empty until the first buffer is created, so it
#: cannot be the allow-list: a fresh process that loads a checkpoint before training would refuse it.
_BUILTIN_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_statistic(owner: object, name: str) -> object:
    """Stand-in for ``getattr`` that only resolves ``HistoryBuffer``'s statistics methods.

    ``HistoryBuffer.__getstate__`` pickles its statistics as ``getattr(HistoryBuffer, 'min')``.
    Allow-listing the real ``getattr`` for weights-only loading would let a crafted checkpoint walk
    from an allowed class to arbitrary objects, so only these lookups are answered: the built-in
    statistics and any registered with ``HistoryBuffer.register_statistics`` in this process.
    """
    if owner is HistoryBuffer and name in _BUILTIN_STATISTICS | set(HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics are allowed')


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read MMEngine's own checkpoints.

    torch>=2.6 loads with ``weights_only=True`` by default, while MMEngine 0.10.7 stores its message
    hub (``HistoryBuffer`` objects holding numpy arrays) in every checkpoint: ``resume=True`` then fails
    with 'Unsupported global: mmengine.logging.history_buffer.HistoryBuffer'. Rather than turning
    safe loading off, we allow-list exactly the plain-data types such a checkpoint contains.
    """
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    numpy_types = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    numpy_types += [type(np.dtype(kind)) for kind in '?bhilqBHILQefdgFDG']
    # Checkpoints written under numpy 1.x name these functions by their old module path.
    renamed = [(multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
               (multiarray.scalar, 'numpy.core.multiarray.scalar')]
    torch.serialization.add_safe_globals(
        [HistoryBuffer, *numpy_types, *renamed, (_history_buffer_statistic, 'builtins.getattr')])


#: The package whose configs ``mmincubation::<config>`` bases name: ``<package dir>/.mim/configs`` (setup.py).
PACKAGE = 'mmincubation'
#: MMEngine's own look-ups, which ours hand every other package to (from the modules that define them: only
#: ``mmengine.config.config``'s names are replaced).
_STOCK_PACKAGE_AND_CFG_PATH = mmengine_config_utils._get_package_and_cfg_path
_STOCK_INSTALLED_PATH = mmengine_package_utils.get_installed_path
_STOCK_GET_CFG_PATH = mmengine_config.Config._get_cfg_path


def _package_and_cfg_path(cfg_path: str) -> tuple[str, str]:
    """``_get_package_and_cfg_path`` that also takes ``mmincubation::<config>.py`` (no sub-folder).

    MMEngine's version insists on ``package::folder/name`` (``re.match(r'\\w*::\\w*/\\w*')``): every
    mmpretrain/mmdet config lives in a folder, while our pipelines sit at the top of ``configs/``.
    """
    package, _, name = cfg_path.partition('::')
    if package == PACKAGE and name and '::' not in name:
        return PACKAGE, name
    return _STOCK_PACKAGE_AND_CFG_PATH(cfg_path)


def _installed_path(package: str) -> str:
    """``get_installed_path`` that finds this package where it is imported from.

    MMEngine joins the distribution's location with the package name: for an editable (PEP 660) install
    that location is site-packages, which holds no ``mmincubation`` folder (the package stays in the
    checkout), so ``mmincubation::`` bases were looked for in ``site-packages/mmincubation/.mim``. The
    imported package is the one whose ``.mim`` folder the build filled (setup.py), whatever the install.
    """
    return osp.dirname(osp.abspath(__file__)) if package == PACKAGE else _STOCK_INSTALLED_PATH(package)


def _cfg_path_and_scope(cfg_path: str, filename: str) -> tuple[str, str | None]:
    """``Config._get_cfg_path`` that gives ``mmincubation::`` bases no scope, as a base named by its path.

    MMEngine sets ``_scope_=<package>`` on every built dict of a ``pkg::`` base, right for mmpretrain's and
    mmdet's configs, whose types live in their package's registries. Our configs are written for their own
    ``default_scope`` (mmpretrain, or mmdet/mmseg downstream) and name our types ``mmincubation.X``: with
    ``_scope_='mmincubation'``, ``type='ImageClassifier'`` would be looked for in our registries and not found.
    """
    path, scope = _STOCK_GET_CFG_PATH(cfg_path, filename)
    return path, None if scope == PACKAGE else scope


def allow_mmincubation_config_bases() -> None:
    """Let configs inherit ours as ``_base_ = ['mmincubation::incubate_demo_fashion_mnist.py']``.

    MMEngine 0.10.7 reads ``pkg::`` bases only of the OpenMMLab packages it lists
    (``mmengine.config.utils.MODULE2PACKAGE``, alias ``PKG2PROJECT``), from ``get_installed_path(pkg)/.mim/
    configs``. We add ours to the list, replace the two look-ups where ``mmengine.config.config`` calls them
    (it imported them by name) and keep our bases in the scope they are written for. Needs ``import
    mmincubation`` before the config is read: our tools do; MMEngine reads a config's bases before its
    ``custom_imports``.
    """
    mmengine_config_utils.MODULE2PACKAGE[PACKAGE] = PACKAGE
    mmengine_config._get_package_and_cfg_path = _package_and_cfg_path
    mmengine_config.get_installed_path = _installed_path
    mmengine_config.Config._get_cfg_path = staticmethod(_cfg_path_and_scope)


def attention_flop_jit(inputs: list, outputs: list) -> int:
    """Multiply-adds of ``aten::scaled_dot_product_attention`` in a traced graph (an MMEngine FLOP handle).

    ``inputs`` are the op's traced values: query ``(..., L, E)``, key ``(..., S, E)``, value ``(..., S, Ev)``, then
    mask, dropout, causality and scale (not counted, as MMEngine counts no elementwise op). The count is
    ``(...) x L x S x (E + Ev)``: the two matrix products query @ key^T and weights @ value, which MMEngine's
    ``matmul`` handle counts the same way when the attention is written out (mmpretrain's
    ``scaled_dot_product_attention_pyimpl``). With fewer key/value heads (grouped queries) every query head is
    counted, as a written-out attention broadcasts them.
    """
    query, key, value = (get_shape(tensor) for tensor in inputs[:3])
    return math.prod(query[:-2]) * query[-2] * key[-2] * (query[-1] + value[-1])


def count_fused_attention_flops() -> None:
    """Let MMEngine's FLOP counter (``FlopAnalyzer``, ``get_model_complexity_info``) count torch's fused attention.

    mmpretrain 1.2.0's ``MultiheadAttention`` (every ViT) calls ``torch.nn.functional.scaled_dot_product_attention``
    on torch>=2.0, an op MMEngine 0.10.7's handles predate: it is skipped with a warning, and a ViT's FLOPs
    lack both attention products (the demo ViT: 2.6M of its 22.5M). The handle is added to the defaults every
    new ``FlopAnalyzer`` starts from (one MMEngine already has is kept).
    """
    mmengine_complexity._DEFAULT_SUPPORTED_FLOP_OPS.setdefault('aten::scaled_dot_product_attention',
                                                               attention_flop_jit)


def allow_two_argument_adjust_bbox() -> None:
    """Let ``matplotlib._tight_bbox.adjust_bbox(fig, bbox)`` be called without a renderer, as before matplotlib#29340.

    mmpretrain 1.2.0's ``tools/visualization/browse_dataset.py`` draws every mode but ``original`` through it
    with two arguments; matplotlib since December 2024 (matplotlib#29340) wants ``renderer`` too, used only for
    axes locators (none in the tool's plain subplots), so the tool failed with 'adjust_bbox() missing 1 required
    positional argument: 'renderer''. The tool binds the function by name on import, before its config's
    ``custom_imports`` bring us in, so its defaults are extended instead of replacing it: a call that passes a
    renderer is unchanged.
    """
    function = matplotlib._tight_bbox.adjust_bbox
    names = function.__code__.co_varnames[:function.__code__.co_argcount]
    if names[:3] == ('fig', 'bbox_inches', 'renderer') and len(function.__defaults__ or ()) < len(names) - 2:
        function.__defaults__ = (None, ) * (len(names) - 2)


#: The ``runner_type`` of our downstream configs (mmincubation.engine.downstream.RUNNER_TYPE, which a test compares:
#: that module imports MMEngine's runner, too much to import here before anything else).
DOWNSTREAM_RUNNER = 'mmincubation.DownstreamRunner'
_STOCK_CONFIG_INIT = mmengine_config.Config.__init__
_STOCK_MERGE_FROM_DICT = mmengine_config.Config.merge_from_dict


def _fill_downstream_settings(cfg: mmengine_config.Config) -> None:
    if cfg.get('runner_type') == DOWNSTREAM_RUNNER:
        from .engine.downstream import fill_settings
        fill_settings(cfg)


@functools.wraps(_STOCK_CONFIG_INIT)
def _config_init(self: mmengine_config.Config, *args, **kwargs) -> None:
    _STOCK_CONFIG_INIT(self, *args, **kwargs)
    _fill_downstream_settings(self)


@functools.wraps(_STOCK_MERGE_FROM_DICT)
def _merge_from_dict(self: mmengine_config.Config, options: dict, allow_list_keys: bool = True) -> None:
    _STOCK_MERGE_FROM_DICT(self, options, allow_list_keys)
    _fill_downstream_settings(self)


def fill_downstream_settings_on_load() -> None:
    """Fill in the settings of our downstream configs (``'${image_size}'`` placeholders) whenever MMEngine builds
    their ``Config``, and again after each ``merge_from_dict``.

    Our tools and :class:`~mmincubation.engine.downstream.DownstreamRunner` fill them in themselves; a stock
    loader does not: mmdet's ``init_detector`` / ``DetInferencer`` and mmseg's ``init_model`` /
    ``MMSegInferencer`` built the model from ``Config.fromfile`` with the placeholder strings in it ('mean should
    have 1 or 3 values, but got 7 values' for ``mean='${mean}'``). ``Config.__init__`` is the hook rather than
    ``fromfile`` because ``fromfile`` runs a config's ``custom_imports`` (which import mmincubation) before it
    builds the ``Config``: a process that had not imported mmincubation before fills in the config too. Only
    configs whose ``runner_type`` is :data:`DOWNSTREAM_RUNNER` are touched (the placeholders are theirs);
    :func:`~mmincubation.engine.downstream.fill_settings` keeps each placeholder, so a setting merged later
    (``--cfg-options``, ``init_detector(cfg_options=...)``) still reaches every field that names it.
    """
    mmengine_config.Config.__init__ = _config_init
    mmengine_config.Config.merge_from_dict = _merge_from_dict


def _checkpointed(forward: Callable) -> Callable:
    """``forward`` recomputed in the backward pass (non-reentrant ``torch.utils.checkpoint``), keyword
    arguments included; without grad (validation, test) it runs as it is."""
    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return wrapper


def turn_on_activation_checkpointing(model: torch.nn.Module, modules: list[str] | str) -> None:
    """Recompute the activations of the named sub-modules of ``model`` (``'backbone.layers.3'``) in the backward pass.

    MMEngine's runner setting ``activation_checkpointing`` (``mmengine/runner/activation_checkpointing.py``)
    wraps each named module's forward in ``torch.utils.checkpoint`` without ``use_reentrant``, which torch>=2.4
    takes as the *reentrant* variant (with a warning; later releases refuse the call). The reentrant variant
    computes no parameter gradients for a block none of whose inputs require grad: in a hybrid, the first
    block of module k>0 follows frozen meta blocks, so its weights would silently get no gradient. It also
    drops keyword arguments. This one is non-reentrant: gradients and losses equal those without
    checkpointing (tests/test_activation_checkpointing.py).

    Raises:
        AttributeError: a name that is no sub-module of ``model``.
    """
    for name in [modules] if isinstance(modules, str) else modules:
        module = model.get_submodule(name)
        module.forward = _checkpointed(module.forward)


def non_reentrant_activation_checkpointing() -> None:
    """Make MMEngine's ``activation_checkpointing`` runner setting use :func:`turn_on_activation_checkpointing`."""
    mmengine_checkpointing.turn_on_activation_checkpointing = turn_on_activation_checkpointing
    mmengine_runner.turn_on_activation_checkpointing = turn_on_activation_checkpointing


check_torch_version()
allow_mmengine_checkpoints()
allow_mmincubation_config_bases()
fill_downstream_settings_on_load()
count_fused_attention_flops()
allow_two_argument_adjust_bbox()
non_reentrant_activation_checkpointing()
