"""Distributed set-up of tools/train.py and tools/test.py before the runner starts (:func:`setup_launcher`).

``--launcher slurm`` (tools/slurm_train.sh, tools/slurm_incubate.sh): the rendezvous port comes from
the job, not a constant, so that jobs sharing a node cannot collide (several 29500 rendezvous on one
node: the second rank 0 died with EADDRINUSE, its other ranks joined the first job's rendezvous or
waited until the time limit). The order of precedence: MMEngine's ``env_cfg.dist_cfg.port``, the
``MASTER_PORT`` variable (one port for every job that inherits it), else :func:`slurm_port`. Rank 0
then opens the rendezvous server itself and the other ranks meet it there before any process group
exists (:func:`_meet`), so that a taken port or a missing rank gives an error naming the port after
``RENDEZVOUS_TIMEOUT`` seconds (300) at most. ``torch.distributed.init_process_group`` (ours on CPU,
MMEngine's ``_init_dist_slurm`` on GPUs, which keeps an existing ``MASTER_PORT``) reuses that server.

``--launcher pytorch`` (tools/dist_train.sh, dist_test.sh): torchrun owns the rendezvous; see
tools/dist_launch.sh for how its port is chosen.

On machines without CUDA both launchers get a gloo process group and CPU DDP (:func:`_init_cpu_distributed`).
"""
from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping
from datetime import timedelta

import torch

#: SLURM rendezvous ports: PORT_BASE + (10 * job id + step id % 10) % PORT_SPAN, below Linux's
#: ephemeral ports (32768-60999) from which the kernel picks the local port of outgoing connections.
PORT_BASE, PORT_SPAN = 20000, 12000
#: Seconds that the ranks of a SLURM job wait for each other at the rendezvous (``RENDEZVOUS_TIMEOUT``).
DEFAULT_RENDEZVOUS_TIMEOUT = 300

#: Rendezvous servers this process hosts, kept open so that ``init_process_group`` reuses them.
_SERVERS: list = []


class RendezvousError(RuntimeError):
    """The ranks of a job cannot meet: port taken by another program, or a rank missing."""


def slurm_port(env: Mapping[str, str] = os.environ) -> int:
    """The rendezvous port of a SLURM job step, from ``SLURM_JOB_ID`` and ``SLURM_STEP_ID``.

    Every job of an array has its own job id, and the concurrent steps of one allocation (several
    ``srun`` in one ``salloc``) their own step id: any 1200 consecutive job ids times 10 steps get
    distinct ports in [20000, 32000). 29500 (torch's default) outside SLURM.
    """
    if not env.get('SLURM_JOB_ID', '').isdigit():
        return 29500
    step = env.get('SLURM_STEP_ID', '0')
    step = int(step) if step.isdigit() else 0
    return PORT_BASE + (10 * int(env['SLURM_JOB_ID']) + step % 10) % PORT_SPAN


def setup_launcher(cfg) -> None:
    """Prepare ``cfg.launcher``'s distributed set-up; call before building the runner.

    ``slurm``: rendezvous variables and a checked rendezvous (module docstring). Without CUDA, for
    ``slurm`` and ``pytorch``: a gloo process group and CPU DDP.

    Raises:
        RendezvousError: naming the port when it is taken or the ranks did not all meet in time.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'slurm' and 'SLURM_PROCID' in os.environ:
        addr, port, rank, world_size, origin = _slurm_rendezvous_env(cfg)
        _meet(addr, port, rank, world_size, origin)
    if launcher in ('pytorch', 'slurm') and not torch.cuda.is_available():
        _init_cpu_distributed(cfg)


def _slurm_rendezvous_env(cfg) -> tuple[str, int, int, int, str]:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from SLURM's variables, as MMEngine's slurm launcher
    sets them but for the port. Returns the master's address, the port, rank, world size and where the port
    came from."""
    nodes = subprocess.run(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']], capture_output=True,
                           text=True, check=True).stdout.split()
    os.environ.setdefault('MASTER_ADDR', nodes[0])
    dist_port = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('port')
    if dist_port is not None:  # MMEngine's _init_dist_slurm would set MASTER_PORT to it
        port, origin = str(dist_port), 'from env_cfg.dist_cfg.port'
    elif os.environ.get('MASTER_PORT'):
        port, origin = os.environ['MASTER_PORT'], 'from MASTER_PORT'
    else:
        port = str(slurm_port())
        origin = (f'derived from SLURM_JOB_ID={os.environ.get("SLURM_JOB_ID")}, '
                  f'SLURM_STEP_ID={os.environ.get("SLURM_STEP_ID", "0")}')
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RendezvousError(f'rendezvous port {port!r} ({origin}) is not a port number')
    os.environ.update(MASTER_PORT=port, RANK=os.environ['SLURM_PROCID'], WORLD_SIZE=os.environ['SLURM_NTASKS'],
                      LOCAL_RANK=os.environ.get('SLURM_LOCALID', '0'))
    return os.environ['MASTER_ADDR'], int(port), int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), origin


def _rendezvous_timeout() -> float:
    value = os.environ.get('RENDEZVOUS_TIMEOUT', str(DEFAULT_RENDEZVOUS_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise RendezvousError(f'RENDEZVOUS_TIMEOUT={value!r} is not a positive number of seconds')
    return seconds


def _meet(addr: str, port: int, rank: int, world_size: int, origin: str) -> None:
    """All ranks of the job step meet at ``addr:port`` before a process group is created.

    Rank 0 opens the TCPStore server (``multi_tenant``, so that ``init_process_group`` in this process
    reuses it instead of binding the port again), the others connect and wait for this job step's key,
    which a foreign server (another job's rendezvous on the same port) lacks. The others connect in a
    thread because torch's TCPStore client waits forever on a listener that never answers.
    """
    from torch.distributed import DistError, DistNetworkError, TCPStore

    timeout = _rendezvous_timeout()
    wait = timedelta(seconds=timeout)
    key = f'mmincubation/{os.environ.get("SLURM_JOB_ID")}.{os.environ.get("SLURM_STEP_ID", "0")}'
    if rank == 0:
        try:
            store = TCPStore(addr, port, world_size=None, is_master=True, timeout=wait, wait_for_workers=False,
                             multi_tenant=True)
        except DistNetworkError as error:
            if 'EADDRINUSE' not in str(error):
                raise
            raise RendezvousError(
                f'rendezvous port {port} is already in use on this node ({origin}): another job or program '
                f'listens on it. Choose a free port with MASTER_PORT=<port>, or leave MASTER_PORT unset so '
                f'that each SLURM job step gets a port of its own') from None
        _SERVERS.append(store)
        store.set(key, 'open')
        if world_size > 1:
            try:
                store.wait([f'{key}/all'], wait)
            except DistError:  # the wait timed out (DistStoreError)
                joined = int(store.add(f'{key}/joined', 0))
                raise RendezvousError(
                    f'only {joined} of the {world_size - 1} other ranks reached the rendezvous at {addr}:{port} '
                    f'within {timeout:g} s (RENDEZVOUS_TIMEOUT); see their errors') from None
        return

    outcome: dict = {}

    def join() -> None:
        try:
            client = TCPStore(addr, port, world_size=None, is_master=False, timeout=wait)
            client.wait([key], wait)
            if client.add(f'{key}/joined', 1) == world_size - 1:
                client.set(f'{key}/all', 'met')
            outcome['met'] = True
        except Exception as error:  # noqa: BLE001  (reported below)
            outcome['error'] = error

    thread = threading.Thread(target=join, name='mmincubation-rendezvous', daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome.get('met'):
        reason = str(outcome['error']).splitlines()[0] if 'error' in outcome else 'no answer'
        raise RendezvousError(
            f'rank {rank} could not meet rank 0 at {addr}:{port} ({origin}) within {timeout:g} s '
            f'(RENDEZVOUS_TIMEOUT): {reason}. Rank 0 failed (see its error), or another program holds the '
            f'port: then choose a free one with MASTER_PORT=<port>')


def _init_cpu_distributed(cfg) -> None:
    """Make ``--launcher pytorch`` and ``--launcher slurm`` work on machines without CUDA (gloo, CPU DDP).

    MMEngine 0.10.7's pytorch and slurm launchers call ``torch.cuda.set_device`` unconditionally and
    its DDP wrapper defaults to ``device_ids=[LOCAL_RANK]``; both fail on CPU. Starting the gloo process
    group here (for slurm, with the rendezvous variables MMEngine would derive from SLURM's) makes the
    runner skip its own set-up (``Runner.setup_env`` only initialises an uninitialised group), and
    ``device_ids=None`` is what CPU DDP needs.
    """
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized() and 'RANK' in os.environ:
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
