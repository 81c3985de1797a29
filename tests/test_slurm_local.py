"""tools/slurm_incubate.sh on a real SLURM cluster: meta, a K=2 module array and fine-tuning as dependent jobs.

Skipped unless SLURM's commands are installed and a partition ``local`` has a node ready, e.g. the
single-node cluster of tools/slurm_local/start_local_slurm.sh. The jobs share this test's tmp_path,
so the cluster must run them where it is visible (one node, or a shared filesystem).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pipeline import needs_data, tiny_demo_cfg

REPO = Path(__file__).resolve().parents[1]
PARTITION = 'local'
TIMEOUT = 600
FINISHED = {'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE',
            'PREEMPTED'}


def cluster_ready() -> bool:
    """A node of PARTITION is idle or partly used, answered within a few seconds."""
    if not (shutil.which('sbatch') and shutil.which('sinfo')):
        return False
    try:
        states = subprocess.run(['sinfo', '-h', '-p', PARTITION, '-o', '%T'], capture_output=True, text=True,
                                timeout=5).stdout.split()
    except subprocess.TimeoutExpired:
        return False
    return any(state.startswith(('idle', 'mixed')) for state in states)


pytestmark = [needs_data, pytest.mark.skipif(not cluster_ready(),
                                             reason=f'no SLURM cluster with a ready node in partition {PARTITION}')]


def show_jobs(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job`, one dict per job (per task of an array)."""
    out = subprocess.run(['scontrol', '-o', 'show', 'job', job_id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f'scontrol show job {job_id}: {out.stderr}'
    return [dict(field.split('=', 1) for field in line.split() if '=' in field) for line in out.stdout.splitlines()]


def job_logs(jobs: list[dict[str, str]]) -> str:
    parts = []
    for job in jobs:
        log = Path(job.get('StdOut', ''))
        tail = log.read_text(errors='replace')[-3000:] if log.is_file() else '(missing)'
        parts.append(f'--- {job["JobId"]} {job["JobName"]} {job["JobState"]} {job.get("Reason")}: {log}\n{tail}')
    return '\n'.join(parts)


def wait_for(job_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Polls until every job finished; fails at once when one failed or can never start."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        jobs = {job_id: show_jobs(job_id) for job_id in job_ids}
        flat = [job for tasks in jobs.values() for job in tasks]
        failed = [job for job in flat if job['JobState'] in FINISHED - {'COMPLETED'}
                  or job.get('Reason') == 'DependencyNeverSatisfied']
        assert not failed, f'jobs failed:\n{job_logs(flat)}'
        if all(job['JobState'] == 'COMPLETED' for job in flat):
            return jobs
        assert time.monotonic() < deadline, f'jobs unfinished after {TIMEOUT} s:\n{job_logs(flat)}'
        time.sleep(3)


def test_slurm_incubate_runs_the_pipeline_as_ordered_jobs(data_root, tmp_path):  # noqa: F811
    work_dir = tmp_path / 'work'
    cfg = tiny_demo_cfg(data_root, work_dir)
    cfg.incubation.num_modules = 2
    config = tmp_path / 'tiny_incubate.py'
    cfg.dump(str(config))

    # One task (one "GPU", one CPU) per job, run by this interpreter; sbatch hands the environment on.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('SBATCH_') and key not in (
               'PYTHONPATH', 'MASTER_PORT', 'GPUS_PER_NODE', 'SRUN_ARGS', 'DRY_RUN', 'E2E', 'MAX_PARALLEL', 'META_GPUS',
               'INCUBATE_GPUS', 'FINETUNE_GPUS', 'E2E_GPUS')}
    env.update(PYTHON=sys.executable, GPUS='1', CPUS_PER_TASK='1', OMP_NUM_THREADS='1',
               SBATCH_ARGS='--time=00:20:00')
    result = subprocess.run(['bash', str(REPO / 'tools' / 'slurm_incubate.sh'), PARTITION, 'slurm-local-test',
                             str(config), '--work-dir', str(work_dir)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r'meta: (\d+)  incubate \(array 0-1, K=2\): (\d+)  assemble\+finetune: (\d+)', result.stdout)
    assert match, result.stdout
    meta_id, incubate_id, finetune_id = match.groups()

    try:
        jobs = wait_for([meta_id, incubate_id, finetune_id])
    finally:
        subprocess.run(['scancel', meta_id, incubate_id, finetune_id], capture_output=True, timeout=30)
    logs = job_logs([job for tasks in jobs.values() for job in tasks])

    # SLURM ran a 2-task array, each task after meta and before fine-tuning.
    (meta, ), modules, (finetune, ) = jobs[meta_id], jobs[incubate_id], jobs[finetune_id]
    assert sorted(job['ArrayTaskId'] for job in modules) == ['0', '1'], logs
    assert all(job['ArrayJobId'] == incubate_id for job in modules), logs
    assert all(meta['EndTime'] <= job['StartTime'] for job in modules), logs  # ISO times sort as strings
    assert all(job['EndTime'] <= finetune['StartTime'] for job in modules), logs

    products = ['meta/meta.pth', 'incubate/module_0/module_0.pth', 'incubate/module_1/module_1.pth',
                'assembled.pth', 'finetune/finetuned.pth']
    for product in products:
        assert (work_dir / product).is_file(), f'{product} is missing\n{logs}'
    stamp = {product: (work_dir / product).stat().st_mtime_ns for product in products}
    assert stamp['incubate/module_0/module_0.pth'] > stamp['meta/meta.pth']
    assert stamp['incubate/module_1/module_1.pth'] > stamp['meta/meta.pth']
    assert stamp['finetune/finetuned.pth'] > max(stamp['incubate/module_0/module_0.pth'],
                                                 stamp['incubate/module_1/module_1.pth'])
