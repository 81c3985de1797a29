"""Launch scripts: tools/dist_train.sh, dist_test.sh, slurm_train.sh and slurm_incubate.sh.

Fake ``python``, ``srun`` and ``sbatch`` executables on PATH record what the scripts would run
(tests/test_distributed.py runs dist_train.sh for real). For slurm_incubate.sh the job scripts it
submits are then run with the fake srun, as SLURM would run them.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'
DEMO = 'configs/incubate_demo_fashion_mnist.py'
TRAIN = str(TOOLS / 'train.py')

RECORDER = """#!/usr/bin/env bash
# Records its arguments (one per line) and PYTHONPATH in $FAKE_LOG/<name>.<n>.{args,env}.
name=$(basename "$0")
n=$(find "$FAKE_LOG" -name "$name.*.args" | wc -l)
printf '%s\\n' "$@" > "$FAKE_LOG/$name.$n.args"
printf '%s\\n' "${PYTHONPATH:-}" > "$FAKE_LOG/$name.$n.env"
"""
SBATCH = RECORDER + """cat > "$FAKE_LOG/$name.$n.script"
echo "$((1000 + n));fakecluster"
"""


@pytest.fixture
def fake(tmp_path):
    """PATH with fake python/srun/sbatch; returns (env, log dir)."""
    bin_dir, log = tmp_path / 'bin', tmp_path / 'log'
    bin_dir.mkdir()
    log.mkdir()
    for name, body in (('python', RECORDER), ('srun', RECORDER), ('sbatch', SBATCH)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if key not in ('PYTHON', 'PYTHONPATH', 'NNODES', 'NODE_RANK', 'PORT', 'MASTER_ADDR', 'GPUS',
                          'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'SBATCH_ARGS', 'DRY_RUN', 'E2E',
                          'MAX_PARALLEL', 'META_GPUS', 'INCUBATE_GPUS', 'FINETUNE_GPUS', 'E2E_GPUS')}
    env.update(PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', FAKE_LOG=str(log))
    return env, log


def run(script: str, *args: str, env: dict, cwd: Path = REPO, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(TOOLS / script), *args], env={**env, **extra}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def calls(log: Path, name: str) -> list[list[str]]:
    count = len(list(log.glob(f'{name}.*.args')))
    return [(log / f'{name}.{n}.args').read_text().splitlines() for n in range(count)]


def test_dist_train_runs_torchrun_with_mmpretrains_interface(fake):
    env, log = fake
    result = run('dist_train.sh', 'my config.py', '4', '--phase', 'incubate', '--module', '1',
                 '--cfg-options', 'a=b c', env=env, NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.2.3', PORT='29999')
    assert result.returncode == 0, result.stderr
    assert calls(log, 'python') == [[
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1', '--master_addr=10.1.2.3',
        '--nproc_per_node=4', '--master_port=29999', TRAIN, 'my config.py', '--launcher', 'pytorch',
        '--phase', 'incubate', '--module', '1', '--cfg-options', 'a=b c']]
    assert (log / 'python.0.env').read_text().strip() == str(REPO)  # tools/ importable from any cwd

    # One node without PORT: torchrun picks a free port itself, so that runs sharing a machine never collide.
    result = run('dist_train.sh', DEMO, '2', env=env, PYTHONPATH='/elsewhere')
    assert result.returncode == 0, result.stderr
    assert calls(log, 'python')[1] == [
        '-m', 'torch.distributed.run', '--standalone', '--nnodes=1', '--nproc_per_node=2', TRAIN, DEMO,
        '--launcher', 'pytorch']
    assert (log / 'python.1.env').read_text().strip() == f'{REPO}:/elsewhere'


@pytest.mark.parametrize('nnodes, hint', [('1', 'or unset PORT'), ('2', 'on every node')])
def test_dist_train_refuses_a_port_in_use_on_the_master_node(fake, nnodes, hint):
    env, log = fake
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        result = run('dist_train.sh', DEMO, '2', env=env, NNODES=nnodes, PORT=port)
        assert result.returncode == 1
        assert f'dist_train.sh: rendezvous port {port} is already in use on this node' in result.stderr
        assert 'PORT=<port>' in result.stderr and hint in result.stderr
        assert not calls(log, 'python')
        # Other nodes connect to the master's port, they do not listen on it.
        result = run('dist_test.sh', DEMO, 'ft.pth', '2', env=env, NNODES='2', NODE_RANK='1', PORT=port)
        assert result.returncode == 0, result.stderr
        assert f'--master_port={port}' in calls(log, 'python')[0]


def test_dist_test_passes_the_checkpoint_and_test_args(fake):
    env, log = fake
    result = run('dist_test.sh', DEMO, 'ft.pth', '8', '--work-dir', 'out', env=env, PORT='29510')
    assert result.returncode == 0, result.stderr
    assert calls(log, 'python') == [[
        '-m', 'torch.distributed.run', '--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
        '--nproc_per_node=8', '--master_port=29510', str(TOOLS / 'test.py'), DEMO, 'ft.pth',
        '--launcher', 'pytorch', '--work-dir', 'out']]


@pytest.mark.parametrize('script, args', [('dist_train.sh', ['cfg.py']), ('dist_test.sh', ['cfg.py', 'x.pth']),
                                          ('slurm_train.sh', ['p', 'j']), ('slurm_incubate.sh', ['p', 'j'])])
def test_missing_arguments_print_the_usage(fake, script, args):
    env, log = fake
    result = run(script, *args, env=env)
    assert result.returncode == 2 and 'usage:' in result.stderr
    assert not list(log.iterdir())


def test_slurm_train_starts_one_task_per_gpu(fake):
    env, log = fake
    result = run('slurm_train.sh', 'gpu', 'vitb', DEMO, 'work_dirs/x', '--amp', env=env, GPUS='16',
                 SRUN_ARGS='--quotatype=auto --time=1:00:00')
    assert result.returncode == 0, result.stderr
    assert calls(log, 'srun') == [[
        '-p', 'gpu', '--job-name=vitb', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=5',
        '--kill-on-bad-exit=1', '--quotatype=auto', '--time=1:00:00',
        'python', '-u', TRAIN, DEMO, '--launcher', 'slurm', '--work-dir', 'work_dirs/x', '--amp']]
    # Fewer GPUs than a node: one node with that many; WORK_DIR is optional.
    result = run('slurm_train.sh', 'gpu', 'small', DEMO, '--phase', 'meta', env=env, GPUS='2', CPUS_PER_TASK='3')
    assert result.returncode == 0, result.stderr
    assert calls(log, 'srun')[1] == [
        '-p', 'gpu', '--job-name=small', '--gres=gpu:2', '--ntasks=2', '--ntasks-per-node=2', '--cpus-per-task=3',
        '--kill-on-bad-exit=1', 'python', '-u', TRAIN, DEMO, '--launcher', 'slurm', '--phase', 'meta']


def option(args: list[str], name: str) -> str | None:
    values = [arg.split('=', 1)[1] for arg in args if arg.startswith(f'{name}=')]
    assert len(values) <= 1, (name, args)
    return values[0] if values else None


def run_job(log: Path, env: dict, index: int, **slurm_env: str) -> list[str]:
    """Run the index-th submitted job script as SLURM would; returns what it passed to srun."""
    before = len(calls(log, 'srun'))
    result = subprocess.run(['bash', str(log / f'sbatch.{index}.script')], env={**env, **slurm_env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (log / f'srun.{before}.env').read_text().strip().split(':')[0] == str(REPO)
    return calls(log, 'srun')[before]


def test_slurm_incubate_submits_meta_then_a_module_array_then_finetune(fake, tmp_path):
    env, log = fake
    result = run('slurm_incubate.sh', 'gpu', 'vitb', DEMO, '--work-dir', str(tmp_path / 'work dir'), env=env,
                 PYTHON=sys.executable, META_GPUS='4', INCUBATE_GPUS='8', FINETUNE_GPUS='16',
                 SBATCH_ARGS='--time=2:00:00')
    assert result.returncode == 0, result.stderr
    meta, incubate, finetune = calls(log, 'sbatch')  # exactly three jobs
    for job, name, gpus in ((meta, 'meta', 4), (incubate, 'incubate', 8), (finetune, 'finetune', 16)):
        assert job[:3] == ['--parsable', '-p', 'gpu'] and job[-1] == '--time=2:00:00'
        assert option(job, '--job-name') == f'vitb-{name}'
        assert option(job, '--ntasks') == str(gpus)
        assert option(job, '--ntasks-per-node') == str(min(gpus, 8)) and option(job, '--gres') == f'gpu:{min(gpus, 8)}'
    # The chain: sbatch answered 1000, 1001, 1002 (";cluster" suffix stripped).
    assert option(meta, '--dependency') is None and option(meta, '--array') is None
    assert option(incubate, '--array') == '0-3'  # K = 4 modules in the demo config
    assert option(incubate, '--dependency') == 'afterok:1000'
    assert option(finetune, '--dependency') == 'afterok:1001' and option(finetune, '--array') is None
    assert 'meta: 1000  incubate (array 0-3, K=4): 1001  assemble+finetune: 1002' in result.stdout

    # The job scripts, run as SLURM would, start tools/train.py with the phase of the job.
    common = ['--kill-on-bad-exit=1', sys.executable, '-u', TRAIN, DEMO, '--launcher', 'slurm',
              '--work-dir', str(tmp_path / 'work dir')]
    assert run_job(log, env, 0) == common + ['--phase', 'meta']
    assert run_job(log, env, 1, SLURM_ARRAY_TASK_ID='2') == common + ['--phase', 'incubate', '--module', '2']
    assert run_job(log, env, 1, SLURM_ARRAY_TASK_ID='0') == common + ['--phase', 'incubate', '--module', '0']
    assert run_job(log, env, 2) == common + ['--phase', 'assemble', 'finetune']
    for index in range(3):
        script = (log / f'sbatch.{index}.script').read_text()
        assert script.startswith('#!/usr/bin/env bash\nset -euo pipefail\n')
        # Array tasks sharing a node rendezvous on ports that tools/train.py derives from their own job ids
        # (mmincubation.launcher.slurm_port, tests/test_launcher.py): no second formula in the job script.
        assert 'MASTER_PORT' not in script


def test_slurm_incubate_reads_k_through_cfg_options_and_adds_e2e(fake):
    env, log = fake
    result = run('slurm_incubate.sh', 'gpu', 'demo', DEMO, '--cfg-options', 'incubation.num_modules=2', env=env,
                 PYTHON=sys.executable, GPUS='2', E2E='1', MAX_PARALLEL='1', SRUN_ARGS='--mpi=pmi2')
    assert result.returncode == 0, result.stderr
    meta, incubate, finetune, e2e = calls(log, 'sbatch')
    assert option(incubate, '--array') == '0-1%1'
    assert all(option(job, '--ntasks') == '2' for job in (meta, incubate, finetune, e2e))
    assert option(e2e, '--dependency') is None and option(e2e, '--job-name') == 'demo-e2e'
    srun = run_job(log, env, 3)
    assert srun[:2] == ['--kill-on-bad-exit=1', '--mpi=pmi2']
    assert srun[-4:] == ['--cfg-options', 'incubation.num_modules=2', '--phase', 'e2e']


def test_slurm_incubate_dry_run_prints_the_commands_and_submits_nothing(fake):
    env, log = fake
    result = run('slurm_incubate.sh', 'gpu', 'demo', DEMO, env=env, PYTHON=sys.executable, DRY_RUN='1',
                 INCUBATE_GPUS='4')
    assert result.returncode == 0, result.stderr
    assert not calls(log, 'sbatch')
    commands = [line for line in result.stdout.splitlines() if line.startswith('sbatch ')]
    assert len(commands) == 3
    assert '--array=0-3 --dependency=afterok:DRY_RUN_META_JOB_ID' in commands[1] and '--ntasks=4 ' in commands[1]
    assert '--dependency=afterok:DRY_RUN_INCUBATE_JOB_ID' in commands[2]
    assert '--phase incubate --module "$SLURM_ARRAY_TASK_ID"' in result.stdout


def test_slurm_incubate_refuses_phase_arguments_and_plain_configs(fake):
    env, log = fake
    result = run('slurm_incubate.sh', 'gpu', 'x', DEMO, '--module', '1', env=env, PYTHON=sys.executable)
    assert result.returncode == 2 and 'chooses --phase and --module' in result.stderr
    result = run('slurm_incubate.sh', 'gpu', 'x', 'configs/e2e_vit_b.py', env=env, PYTHON=sys.executable)
    assert result.returncode != 0 and 'has no incubation section' in result.stderr
    assert not calls(log, 'sbatch')
