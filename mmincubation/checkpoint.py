"""Reading and writing incubation checkpoints: safe loading, atomic writes, provenance checks."""
from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .layout import LayoutError, check_state_dict

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
    if path.is_dir():
        raise CheckpointError(f'checkpoint {path} is a folder, expected a checkpoint file')
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f'cannot read checkpoint {path} safely: it holds objects that weights-only '
                              f'loading refuses ({str(error).splitlines()[0]})') from error
    except Exception as error:  # noqa: BLE001 - any other failure means the same to the user
        raise CheckpointError(f'cannot read checkpoint {path}: truncated, corrupt or not written by '
                              f'torch.save ({type(error).__name__}: {error})') from error
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


#: What a tagged checkpoint's state dict holds, by the phase that wrote it, for files tagged before
#: the tag recorded it (``holds``): the products of each phase.
HOLDS_BY_PHASE = {'meta': 'meta', 'incubate': 'module', 'assemble': 'full', 'finetune': 'full', 'e2e': 'full'}
_CONTENTS = {
    'meta': ('a meta model (one block per module)', '; a meta model is evaluated with --phase meta'),
    'module': ('a single incubated module', '; assemble the modules first (tools/assemble.py)'),
    'hybrid': ('a hybrid network of an unfinished module incubation (meta model + one real module)',
               '; let the incubation finish and assemble its product'),
    'full': ('the full model', '; without --phase meta the full model is evaluated'),
}


def checkpoint_holds(record: Mapping) -> str | None:
    """What a checkpoint tagged with ``record`` holds: 'meta', 'module', 'hybrid', 'full' or None if unknown."""
    return record.get('holds') or HOLDS_BY_PHASE.get(record.get('phase'))


def load_fitting(path: str | os.PathLike, reference: Mapping[str, object], holds: str,
                 num_modules: int | None = None, prefix: str = '', resizable: tuple[str, ...] = ()) -> dict:
    """Load ``path`` and check that it holds ``holds`` of the model whose state dict is ``reference``.

    Args:
        path: checkpoint file (an mmincubation product, an MMEngine ``epoch_N.pth`` or a plain
            mmpretrain checkpoint).
        reference: the model's state dict (or tensors of the right shapes, e.g. built on the meta device).
        holds: ``'full'`` (the whole model) or ``'meta'`` (a meta model).
        num_modules: for ``holds='meta'``, the K the config asks for.
        prefix: compare only the file's keys under this prefix, with the prefix removed (e.g.
            ``'backbone.'`` for a detector's backbone initialised from a classifier, as
            ``init_cfg=dict(type='Pretrained', prefix='backbone.')`` loads it).
        resizable: keys (after removing ``prefix``) whose shape may differ because the model
            resizes them on loading (mmpretrain's ViT interpolates ``pos_embed`` to its input size).

    Returns:
        The loaded checkpoint, as :func:`load_weights` returns it.

    Raises:
        CheckpointError: naming ``path`` and the difference when the file is unreadable, its
            mmincubation tag records other contents (a single module, a hybrid, a meta model of
            another K) or its keys or shapes do not fit ``reference``. Untagged files are judged by
            keys and shapes alone.
    """
    checkpoint = load_weights(path)
    record = checkpoint['meta'].get(META_KEY)
    if isinstance(record, Mapping):
        found = checkpoint_holds(record)
        if found != holds:
            what, hint = _CONTENTS.get(found, (f'an unknown kind of weights ({found!r})', ''))
            module = f' (module {record["module"]})' if 'module' in record else ''
            raise CheckpointError(
                f'checkpoint {path} holds {what}{module}, written by the "{record.get("phase")}" phase of '
                f'layout {record.get("layout")}; expected {_CONTENTS[holds][0]}{hint}')
        layout = record.get('layout') or []
        if holds == 'meta' and num_modules is not None and len(layout) != num_modules:
            raise CheckpointError(f'checkpoint {path} is a meta model of {len(layout)} modules (layout {layout}), '
                                  f'the config asks for {num_modules}')
    state_dict = {key[len(prefix):]: value for key, value in checkpoint['state_dict'].items()
                  if key.startswith(prefix)}
    state_dict.update({key: reference[key] for key in resizable if key in state_dict and key in reference})
    try:
        check_state_dict(state_dict, reference, source=f'checkpoint {path}' + (f' (keys {prefix}*)' if prefix else ''))
    except LayoutError as error:
        raise CheckpointError(str(error)) from error
    return checkpoint
