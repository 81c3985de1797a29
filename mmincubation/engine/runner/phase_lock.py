"""One writer per phase: a lock file beside the phase's products, safe on shared cluster filesystems.

Why a lock *file* made with ``O_CREAT | O_EXCL`` and not ``flock``/``fcntl``: on NFS, ``flock`` is
either local to one client (older kernels) or emulated with byte-range locks that need a working lock
daemon, and Lustre only honours it when mounted with ``-o flock``; a lock that silently does not hold
across machines is worse than none. Exclusive creation is atomic on local filesystems, on NFSv3+ and on
Lustre, so exactly one process gets the phase's lock file (:meth:`~mmincubation.phases.Phase.lock_file`:
``<phase work dir>/.phase.lock``). It holds who took it (host, pid,
start time) and is touched every :data:`HEARTBEAT` seconds while the phase runs.

A lock whose holder is gone does not block the rerun: on the same host, a pid that no longer runs
(SIGKILL, OOM, Ctrl-C) frees it at once; from another host (a dead node), or a pid that runs but no
longer beats (reused by another process), a heartbeat older than :data:`STALE_AFTER` seconds does.
A stale lock is renamed away before a new one is created, so two
processes that both find it stale still cannot both take it.

Each ``--module k`` job locks its own module's folder, so K jobs of one pipeline on K machines sharing
one work dir never wait for each other; the lock refuses only a second writer of the *same* phase.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

#: Seconds between two touches of a held lock.
HEARTBEAT = 30.0
#: A lock from another host whose heartbeat is older than this (seconds) is taken to be a dead node's.
STALE_AFTER = 600.0


class PhaseLocked(RuntimeError):
    """Another live process is writing this phase's products; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(path: Path) -> dict | None:
    """The holder a lock file names, or None when it is unreadable (being written, or garbage)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stale(path: Path, holder: dict | None, now: float) -> bool:
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if holder is None:  # half-written: stale only once nobody could still be writing it
        return age > STALE_AFTER
    if holder.get('host') == socket.gethostname() and not _alive(int(holder.get('pid', -1))):
        return True
    return age > STALE_AFTER  # another host's, or a live pid that no longer beats (reused by another process)


class PhaseLock:
    """Hold the lock file ``path`` for the ``with`` block, or raise :class:`PhaseLocked` at once.

    Args:
        path: the lock file (its folder is created if missing).
        what: the phase as it is named in messages (``'incubate module 2'``).
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._made: list[Path] = []  # folders made for the lock, removed with it when left empty

    def _create(self) -> bool:
        holder = dict(host=socket.gethostname(), pid=os.getpid(), started=time.strftime('%Y-%m-%d %H:%M:%S'))
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as f:
            f.write(json.dumps(holder))
        return True

    def acquire(self) -> None:
        self._made = [folder for folder in [self.path.parent, *self.path.parent.parents] if not folder.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            holder = _holder(self.path)
            if not _stale(self.path, holder, time.time()):
                who = (f'host {holder.get("host")}, pid {holder.get("pid")}, started {holder.get("started")}'
                       if holder else 'a process that is still writing the lock')
                raise PhaseLocked(f'the {self.what} phase is being written by another process ({who}): '
                                  f'{self.path}. Wait for it, or use another --work-dir; if that process is '
                                  'gone on another machine, delete the lock file')
            aside = self.path.with_name(f'{self.path.name}.stale.{os.getpid()}.{time.time_ns()}')
            try:
                os.rename(self.path, aside)
                aside.unlink()
            except FileNotFoundError:
                pass  # another process moved it first; whoever creates next wins
            if not self._create():
                raise PhaseLocked(f'the {self.what} phase was just taken by another process: {self.path}')
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        holder = _holder(self.path) or {}
        if (holder.get('host'), holder.get('pid')) == (socket.gethostname(), os.getpid()):
            self.path.unlink(missing_ok=True)
        for folder in self._made:  # a phase refused before it wrote anything leaves no folder behind
            try:
                folder.rmdir()
            except OSError:  # not empty: the phase wrote something
                break

    def __enter__(self) -> PhaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
