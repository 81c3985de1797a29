"""mmincubation.launcher in this process: the SLURM rendezvous port, its check, and the rendezvous itself.

tests/test_distributed.py runs whole jobs through tools/slurm_train.sh and tools/dist_train.sh.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from mmincubation.launcher import RendezvousError, setup_launcher, slurm_port

RENDEZVOUS_VARS = ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'RENDEZVOUS_TIMEOUT',
                   'SLURM_JOB_ID', 'SLURM_STEP_ID', 'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_slurm_port_differs_between_job_steps_that_can_share_a_node():
    # Consecutive jobs (an array, a burst of submissions) and the steps of one allocation (several
    # slurm_train.sh in one salloc) all get their own port, below Linux's ephemeral range (32768-).
    ports = {slurm_port(dict(SLURM_JOB_ID=str(job), SLURM_STEP_ID=str(step)))
             for job in range(123_456, 123_456 + 1200) for step in range(10)}
    assert len(ports) == 1200 * 10
    assert min(ports) >= 20000 and max(ports) < 32000
    assert slurm_port(dict(SLURM_JOB_ID='7')) == slurm_port(dict(SLURM_JOB_ID='7', SLURM_STEP_ID='0')) == 20070
    assert slurm_port(dict(SLURM_JOB_ID='7', SLURM_STEP_ID='3')) == 20073
    assert slurm_port(dict(SLURM_JOB_ID='7', SLURM_STEP_ID='batch')) == 20070  # not a number: step 0
    assert slurm_port({}) == 29500  # not a SLURM job: torch's default


@pytest.fixture
def slurm_task(tmp_path, monkeypatch):
    """Rank 0 of a 1-task SLURM job on this host (scontrol answers 127.0.0.1), no rendezvous variables set."""
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\necho 127.0.0.1\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
    for name in RENDEZVOUS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', SLURM_NODELIST='node01').items():
        monkeypatch.setenv(name, value)
    yield monkeypatch
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def job_id_for_a_free_port() -> str:
    """A SLURM_JOB_ID whose derived port nobody on this machine listens on."""
    for job in range(4_000_000 + os.getpid() % 1000, 4_100_000, 7):
        port = slurm_port(dict(SLURM_JOB_ID=str(job)))
        with socket.socket() as sock:
            try:
                sock.bind(('', port))
            except OSError:
                continue
        return str(job)
    raise AssertionError('no free derived port')


def test_a_taken_slurm_port_is_refused_naming_the_port_and_master_port(slurm_task):
    job = job_id_for_a_free_port()
    slurm_task.setenv('SLURM_JOB_ID', job)
    port = slurm_port(dict(SLURM_JOB_ID=job))
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', port))
        holder.listen()
        with pytest.raises(RendezvousError, match=f'port {port} is already in use') as error:
            setup_launcher(Config(dict(launcher='slurm')))
    assert 'MASTER_PORT' in str(error.value) and f'SLURM_JOB_ID={job}' in str(error.value)
    assert not torch_dist.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason='simulates the GPU path on a machine without CUDA')
def test_gpu_path_mmengine_slurm_launcher_rendezvous_on_the_derived_port(slurm_task):
    """On GPUs MMEngine initialises the group (``_init_dist_slurm``): it must use our port and our held server."""
    from mmengine.dist import init_dist
    job = job_id_for_a_free_port()
    slurm_task.setenv('SLURM_JOB_ID', job)
    slurm_task.setattr(torch.cuda, 'is_available', lambda: True)  # setup_launcher leaves the group to MMEngine
    cfg = Config(dict(launcher='slurm'))
    setup_launcher(cfg)
    assert os.environ['MASTER_PORT'] == str(slurm_port(dict(SLURM_JOB_ID=job)))
    assert not torch_dist.is_initialized() and 'model_wrapper_cfg' not in cfg
    slurm_task.setattr(torch.cuda, 'set_device', lambda device: None)
    init_dist('slurm', backend='gloo')  # as Runner.setup_env does, with gloo for nccl
    assert (torch_dist.get_rank(), torch_dist.get_world_size()) == (0, 1)


def test_user_master_port_wins_over_the_derived_one(slurm_task):
    port = free_port()
    slurm_task.setenv('SLURM_JOB_ID', '1234')
    slurm_task.setenv('MASTER_PORT', str(port))
    slurm_task.setattr(torch.cuda, 'is_available', lambda: False)
    setup_launcher(Config(dict(launcher='slurm')))
    assert torch_dist.is_initialized() and os.environ['MASTER_PORT'] == str(port)


RANK1 = """
import sys
from mmengine.config import Config
from mmincubation.launcher import RendezvousError, setup_launcher
try:
    setup_launcher(Config(dict(launcher='slurm')))
except RendezvousError as error:
    sys.exit(f'error: {error}')
"""


def test_other_ranks_give_up_on_a_foreign_listener_within_the_rendezvous_timeout(tmp_path):
    """Rank 1 of a job whose port another program holds: a clear error after RENDEZVOUS_TIMEOUT, not a hang.

    (torch's TCPStore client alone waits forever on a listener that never answers, whatever its timeout.)
    """
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\necho 127.0.0.1\n')
    scontrol.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in RENDEZVOUS_VARS}
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', 0))
        holder.listen()
        port = holder.getsockname()[1]
        env.update(PATH=f'{tmp_path}{os.pathsep}{env["PATH"]}', CUDA_VISIBLE_DEVICES='', MASTER_PORT=str(port),
                   RENDEZVOUS_TIMEOUT='5', SLURM_JOB_ID='99', SLURM_PROCID='1', SLURM_NTASKS='2',
                   SLURM_LOCALID='1', SLURM_NODELIST='node01')
        started = time.monotonic()
        result = subprocess.run([sys.executable, '-c', RANK1], env=env, capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-3000:]
    assert f'127.0.0.1:{port}' in result.stderr and 'within 5 s' in result.stderr and 'MASTER_PORT' in result.stderr
    assert elapsed < 40
