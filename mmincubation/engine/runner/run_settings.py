"""Run settings of a pipeline config that a training tool may set (ours or a stock one) and their meaning here.

A training tool sets a few top-level settings before it builds the runner: mmpretrain/mmdet/mmseg's
``tools/train.py`` (and ours) set ``launcher`` and ``work_dir``, ``--amp`` the optimizer wrapper, ``--resume``
``resume`` and ``load_from``. :func:`~.phase_config.phase_recipe` copies every top-level setting into each
phase's recipe, which is what ``launcher``, ``work_dir`` (each phase in its own sub-folder) and AMP are meant
to do. ``resume`` needs nothing: each phase resumes by itself when it was interrupted
(:class:`~.incubation_runner.IncubationRunner` sets it per phase), so ``resume=False`` does not stop that and
``--resume`` alone changes nothing. A top-level ``load_from`` has no single meaning for a pipeline.
"""
from __future__ import annotations

from mmengine.config import Config

from .phase_config import RecipeError


def check_pipeline_run_settings(cfg: Config) -> None:
    """Refuse a top-level ``load_from`` in a config with an ``incubation`` section.

    It would be copied into every phase's recipe: the meta model, each module's hybrid and the E2E baseline
    would all start from that one checkpoint (the fine-tune reads the assembly instead). A stock tool's
    ``--resume PATH`` sets it too, and an interrupted phase resumes from its own checkpoint anyway.

    Raises:
        RecipeError: naming the checkpoint and the per-phase setting to use instead.
    """
    load_from = cfg.get('load_from') if 'incubation' in cfg else None
    if load_from:
        raise RecipeError(
            f'load_from={load_from!r} at the top of a pipeline config would start every phase from it: set '
            'incubation.<phase>.load_from for the phase it is meant for (e.g. --cfg-options '
            f'incubation.e2e.load_from={load_from}); interrupted phases resume by themselves, with no --resume PATH')
