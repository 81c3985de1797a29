"""Fixes that the 2023-era OpenMMLab stack needs on today's torch, each explained where it is made.

Imported first by ``mmincubation/__init__.py``, so every entry point (tools, configs with
``custom_imports``, tests) runs with them. Nothing in site-packages is edited.
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

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


allow_mmengine_checkpoints()
