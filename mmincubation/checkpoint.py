"""Reading and writing incubation checkpoints: safe loading, atomic writes, provenance checks."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

#: Key under ``checkpoint['meta']`` where mmincubation records what a checkpoint holds.
META_KEY = 'mmincubation'


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or holds something other than what was expected."""


def save_atomic(checkpoint: Mapping, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` with ``torch.save`` so that ``path`` is never left half-written.

    The data goes to a temporary file in the same folder, is flushed to disk and then renamed over
    ``path`` in one step: an interrupted write leaves any previous file untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(dict(checkpoint), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | os.PathLike) -> dict:
    """Load a checkpoint with torch's safe (``weights_only``) unpickler.

    Returns a dict with ``state_dict`` and ``meta`` (empty when the file is a bare state dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CheckpointError(f'cannot read checkpoint {path}: {error}') from error
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict')
    if 'state_dict' in checkpoint:
        return dict(state_dict=dict(checkpoint['state_dict']), meta=dict(checkpoint.get('meta') or {}))
    if all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return dict(state_dict=dict(checkpoint), meta={})
    raise CheckpointError(f'checkpoint {path} has no "state_dict" (keys: {sorted(checkpoint)[:8]})')


def incubation_meta(checkpoint: Mapping, path: str | os.PathLike, phase: str) -> dict:
    """The mmincubation record of a loaded checkpoint, checked to come from ``phase``."""
    record = checkpoint['meta'].get(META_KEY)
    if not isinstance(record, Mapping):
        raise CheckpointError(f'checkpoint {path} was not written by mmincubation (no meta.{META_KEY}); '
                              f'expected the output of the "{phase}" phase')
    if record.get('phase') != phase:
        raise CheckpointError(f'checkpoint {path} is the output of the "{record.get("phase")}" phase, '
                              f'expected the output of the "{phase}" phase')
    return dict(record)
