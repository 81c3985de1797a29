"""Reading and writing incubation checkpoints: safe loading, atomic writes, provenance checks."""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import torch

from .layout import LayoutError, check_state_dict
from .tags import META_KEY, Tag


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or holds something other than what was expected; also
    another path a tool is given (a config, an output) that it cannot use (:func:`check_output`)."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` name the same file: equal once resolved (``.``, ``..``, symbolic
    links), or the same inode (hard links, bind mounts)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = 'output',
                 example: str = 'name.pth', replace: bool = True) -> Path:
    """Refuse an output file path before anything is read or written.

    Raises:
        CheckpointError: naming ``path`` when it is an existing folder or names one (a trailing
            ``/``), when it is one of ``inputs`` (compared resolved and by inode, so ``./a.pth``, a
            symbolic or a hard link to an input are caught too): writing it would lose that input, or,
            without ``replace``, when it exists at all (later phases may have been made from it).
    """
    text = os.fspath(path)
    out = Path(path)
    if out.is_dir() or text.endswith(('/', os.sep)):
        raise CheckpointError(f'{what} {text} is a folder, expected a file path (e.g. {out / example})')
    for source in inputs:
        if same_file(out, source):
            raise CheckpointError(f'{what} {text} would overwrite the input {os.fspath(source)}; '
                                  'choose another output path')
    if not replace and os.path.lexists(out):
        raise CheckpointError(f'{what} {text} already exists; nothing written: no file is replaced (later phases may '
                              'have been made from it): choose another output path, or move it away first')
    return out


#: File types ``mmengine.Config.fromfile`` reads.
CONFIG_SUFFIXES = ('.py', '.json', '.yml', '.yaml')


def check_config_file(path: str | os.PathLike) -> Path:
    """Refuse a config path that is missing, a folder or not a config file, before MMEngine reads it."""
    config = Path(path)
    if config.is_dir():
        raise CheckpointError(f'config {config} is a folder, expected a config file ({", ".join(CONFIG_SUFFIXES)})')
    if not config.is_file():
        raise CheckpointError(f'config {config} does not exist')
    if config.suffix not in CONFIG_SUFFIXES:
        raise CheckpointError(f'config {config} is not a config file: expected {", ".join(CONFIG_SUFFIXES)} '
                              '(the config comes first, e.g. configs/incubate_vit_b.py)')
    return config


def _umask() -> int:
    """The process's umask: read from /proc where it can be, else set and restored (briefly 022)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith('Umask:'))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a binary file object so that ``path`` is never left half-written.

    The data goes to a temporary file in the same folder, is flushed to disk and then renamed over
    ``path`` in one step: an interrupted write leaves any previous file untouched. A missing folder is
    created; a ``path`` that is (or names) a folder is refused (:func:`check_output`) before anything is
    written. A symbolic link is written through (the link stays, its target is replaced), and the file
    gets the permissions a plain ``open`` would give it (those of the file it replaces, else the umask's).
    """
    path = check_output(path)
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f'.{target.name}.', suffix='.tmp', dir=target.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_atomic(checkpoint: Mapping, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` with ``torch.save`` so that ``path`` is never left half-written (:func:`write_atomic`)."""
    return write_atomic(path, lambda f: torch.save(dict(checkpoint), f))


_ZIP_MAGIC = b'PK\x03\x04'
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def _unreadable(path: Path, what: str, error: Exception) -> CheckpointError:
    """A one-line :class:`CheckpointError` saying why torch could not load ``path`` (read from its first bytes)."""
    with open(path, 'rb') as f:
        head = f.read(8)
    message = ' '.join(_ANSI.sub('', str(error)).split())
    refused = re.search(r'Unsupported global: GLOBAL ([\w.]+)', message)
    not_torch = 'not written by torch.save'
    if not head:
        reason = 'the file is empty (0 bytes); expected a file written by torch.save'
    elif refused:
        hint = (': official Deep Incubation checkpoints pickle their training args, convert them with '
                'tools/convert_official.py' if refused.group(1) == 'argparse.Namespace' else '')
        return CheckpointError(f'cannot read {what} {path} safely: it pickles {refused.group(1)}, which '
                               f'torch.load(weights_only=True) refuses{hint}')
    elif head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        reason = 'truncated, corrupt or still being written (an incomplete zip archive)'
    elif head.startswith(_ZIP_MAGIC) and not any(name.split('/')[-1] == 'data.pkl'
                                                 for name in zipfile.ZipFile(path).namelist()):
        reason = f'{not_torch} (a zip archive without the data.pkl of torch.save)'
    elif head.startswith(b'\x80') and re.search(r'Unsupported operand|magic number', message):
        reason = f'{not_torch} (a plain pickle? {_gist(message)})'
    elif not head.startswith((_ZIP_MAGIC, b'\x80')):
        reason = f'{not_torch} (it starts with {head!r}: a text, JSON or other file?)'
    else:
        reason = f'truncated or corrupt ({type(error).__name__}: {_gist(message)})'
    return CheckpointError(f'cannot read {what} {path}: {reason}')


def _gist(message: str) -> str:
    """The informative part of torch's (often paragraph-long) loading error."""
    for pattern in (r'Unsupported operand \d+', r'PytorchStreamReader failed [^.]*', r'Invalid magic number'):
        found = re.search(pattern, message)
        if found:
            return found.group(0)
    return message.split('. ')[0][:200]


def read_torch_file(path: str | os.PathLike, what: str = 'checkpoint', **load_kwargs) -> object:
    """``torch.load(path, map_location='cpu', weights_only=True)``, every failure a one-line error.

    Raises:
        CheckpointError: ``what`` and ``path`` named, with the cause: a folder, missing, empty, truncated,
            not written by ``torch.save`` (text, JSON, a plain pickle) or pickling an object that
            weights-only loading refuses (named).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f'{what} {path} is a folder, expected a checkpoint file')
    if not path.is_file():
        raise CheckpointError(f'{what} {path} does not exist')
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol: the error below says it better
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location='cpu', weights_only=True, **load_kwargs)
    except OSError as error:
        if not os.access(path, os.R_OK):
            raise CheckpointError(f'cannot read {what} {path}: {error.strerror or error}') from error
        raise _unreadable(path, what, error) from error
    except Exception as error:  # noqa: BLE001 - any other failure is explained from the file's first bytes
        raise _unreadable(path, what, error) from error


def check_finite(state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or Inf (a diverged run's), naming ``what`` and the first such tensors.

    Raises:
        CheckpointError: ``what`` (e.g. ``checkpoint work_dirs/x/meta/meta.pth``), how many tensors are
            non-finite and the first few keys.
    """
    bad = [key for key, value in state_dict.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type != 'meta'
           and not bool(torch.isfinite(value).all())]
    if bad:
        raise CheckpointError(f'{what} holds non-finite weights (NaN or Inf) in {len(bad)} of {len(state_dict)} '
                              f'tensors ({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}): the run that wrote it '
                              'diverged; lower the learning rate and retrain that phase')


def load_weights(path: str | os.PathLike) -> dict:
    """Load a checkpoint with torch's safe (``weights_only``) unpickler (:func:`read_torch_file`).

    Returns a dict with ``state_dict`` and ``meta`` (empty when the file is a bare state dict).
    """
    path = Path(path)
    checkpoint = read_torch_file(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict')
    if 'state_dict' in checkpoint:
        state_dict, meta = checkpoint['state_dict'], checkpoint.get('meta') or {}
        if not isinstance(state_dict, Mapping) or not isinstance(meta, Mapping):
            wrong = 'state_dict' if not isinstance(state_dict, Mapping) else 'meta'
            raise CheckpointError(f'checkpoint {path}: "{wrong}" is a {type(checkpoint[wrong]).__name__}, '
                                  'expected a dict')
    elif checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        state_dict, meta = checkpoint, {}
    else:
        hint = ('; it looks like an official Deep Incubation (timm) checkpoint: convert it with '
                'tools/convert_official.py' if 'model' in checkpoint else '')
        raise CheckpointError(f'checkpoint {path} has no "state_dict" (keys: {sorted(map(str, checkpoint))[:8]}){hint}')
    not_tensors = sorted(str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f'checkpoint {path}: state_dict entries that are not tensors: {not_tensors[:5]}')
    return dict(state_dict=dict(state_dict), meta=dict(meta))


def incubation_meta(checkpoint: Mapping, path: str | os.PathLike, phase: str) -> Tag:
    """The :class:`~mmincubation.tags.Tag` of a loaded checkpoint, checked to come from ``phase``."""
    try:
        tag = Tag.of_checkpoint(checkpoint)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f'checkpoint {path} has a broken mmincubation tag {dict(checkpoint["meta"][META_KEY])} '
                              f'({error}); expected the layout and phase of the "{phase}" phase\'s output') from error
    if tag is None:
        raise CheckpointError(f'checkpoint {path} was not written by mmincubation (no meta.{META_KEY}); '
                              f'expected the output of the "{phase}" phase')
    if tag.phase != phase:
        raise CheckpointError(f'checkpoint {path} is the output of the "{tag.phase}" phase, '
                              f'expected the output of the "{phase}" phase')
    return tag


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (read in chunks), as recorded in a tag's ``inputs``."""
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


_CONTENTS = {
    'meta': ('a meta model (one block per module)', '; a meta model is evaluated with --phase meta'),
    'module': ('a single incubated module', '; assemble the modules first (tools/assemble.py)'),
    'hybrid': ('a hybrid network of an unfinished module incubation (meta model + one real module)',
               '; let the incubation finish and assemble its product'),
    'full': ('the full model', '; without --phase meta the full model is evaluated'),
}


def load_fitting(path: str | os.PathLike, reference: Mapping[str, object], holds: str,
                 num_modules: int | None = None, prefix: str = '', resizable: tuple[str, ...] = (),
                 optional: tuple[str, ...] = (), unused: tuple[str, ...] = ()) -> dict:
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
        optional: prefixes of ``reference`` keys the file may lack because the model adds them to
            what it loads (a downstream Swin's output norms of the earlier stages).
        unused: prefixes of the file's keys (after removing ``prefix``) that ``reference`` may lack because
            the model leaves them unused (a mean-pooled EVA-02 classifier's ``ln2`` in a feature-map backbone).

    Returns:
        The loaded checkpoint, as :func:`load_weights` returns it.

    Raises:
        CheckpointError: naming ``path`` and the difference when the file is unreadable, its
            mmincubation tag records other contents (a single module, a hybrid, a meta model of
            another K) or its keys or shapes do not fit ``reference``. Untagged files are judged by
            keys and shapes alone.
    """
    checkpoint = load_weights(path)
    try:
        tag = Tag.of_checkpoint(checkpoint)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f'checkpoint {path} has a broken mmincubation tag ({error})') from error
    if tag is not None:
        if tag.holds != holds:
            what, hint = _CONTENTS.get(tag.holds, (f'an unknown kind of weights ({tag.holds!r})', ''))
            module = '' if tag.module is None else f' (module {tag.module})'
            raise CheckpointError(
                f'checkpoint {path} holds {what}{module}, written by the "{tag.phase}" phase of '
                f'layout {list(tag.layout)}; expected {_CONTENTS[holds][0]}{hint}')
        if holds == 'meta' and num_modules is not None and len(tag.layout) != num_modules:
            raise CheckpointError(f'checkpoint {path} is a meta model of {len(tag.layout)} modules (layout '
                                  f'{list(tag.layout)}), the config asks for {num_modules}')
    state_dict = {key[len(prefix):]: value for key, value in checkpoint['state_dict'].items()
                  if key.startswith(prefix)}
    state_dict = {key: value for key, value in state_dict.items() if key in reference or not key.startswith(unused)}
    state_dict.update({key: reference[key] for key in resizable if key in state_dict and key in reference})
    state_dict.update({key: value for key, value in reference.items()
                       if key.startswith(optional) and key not in state_dict})
    try:
        check_state_dict(state_dict, reference, source=f'checkpoint {path}' + (f' (keys {prefix}*)' if prefix else ''))
    except LayoutError as error:
        raise CheckpointError(str(error)) from error
    check_finite(state_dict, f'checkpoint {path}')
    return checkpoint
