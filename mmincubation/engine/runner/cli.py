"""What the command-line tools (tools/train.py, test.py, assemble.py) share in reading a config."""
from __future__ import annotations

import argparse
import functools
import os.path as osp
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from mmengine.config import Config

from ...checkpoint import CheckpointError
from ...launcher import RendezvousError
from ...layout import LayoutError
from ..downstream import SettingError, resolve_settings
from ..hooks import TrainingDiverged
from .phase_config import RecipeError
from .phase_lock import PhaseLocked

P = ParamSpec('P')
R = TypeVar('R')


def default_work_dir(config: str, *subdirs: str) -> str:
    """``./work_dirs/<config file name>[/subdirs]``: where the tools write unless told otherwise."""
    return osp.join('./work_dirs', osp.splitext(osp.basename(config))[0], *subdirs)


def merge_config_args(cfg: Config, args: argparse.Namespace, *subdirs: str, keep_work_dir: bool = False) -> Config:
    """Apply ``--cfg-options`` and ``--work-dir`` of ``args`` to ``cfg`` (in place; returned).

    The work dir is ``--work-dir``, else (with ``keep_work_dir``) the config's own ``work_dir``, else
    :func:`default_work_dir` of ``args.config`` and ``subdirs``.
    """
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    work_dir = args.work_dir or (cfg.get('work_dir') if keep_work_dir else None)
    cfg.work_dir = work_dir or default_work_dir(args.config, *subdirs)
    return cfg


def load_config(args: argparse.Namespace, *subdirs: str, keep_work_dir: bool = False) -> Config:
    """``args.config`` read, :func:`merge_config_args` applied and the settings of a downstream config filled in
    (:func:`~mmincubation.engine.downstream.resolve_settings`; a no-op for other configs)."""
    return resolve_settings(merge_config_args(Config.fromfile(args.config), args, *subdirs,
                                              keep_work_dir=keep_work_dir))


def exit_on_bad_input(main: Callable[P, R]) -> Callable[P, R]:
    """Turn a bad file or config (:class:`CheckpointError`, :class:`LayoutError`, :class:`RecipeError`,
    :class:`SettingError`: a downstream placeholder that names no setting), a phase another process is
    writing (:class:`PhaseLocked`), a diverged phase (:class:`TrainingDiverged`) or a rendezvous that
    cannot happen (:class:`RendezvousError`: port taken, ranks missing) into a one-line exit.

    The message already names the file or port and what was expected; a traceback would only bury it.
    """
    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return main(*args, **kwargs)
        except (CheckpointError, LayoutError, PhaseLocked, RecipeError, RendezvousError, SettingError,
                TrainingDiverged) as error:
            raise SystemExit(f'error: {error}') from error
    return wrapper
