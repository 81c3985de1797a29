"""Real torch.distributed: two gloo processes on CPU, started by tools/dist_train.sh (torchrun).

One launch runs module 1's incubation and then the E2E baseline of the tiny demo pipeline, from a
meta model trained here in a single process. Every rank dumps its weights before and after each
phase and the samples it trained on (tests/ddp_probe.py), so we check what DDP must guarantee:
the ranks see disjoint halves of the data yet end with identical weights, the frozen meta modules
are bit-identical to the meta checkpoint, and the trained parameters moved.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT, extract_fashion_mnist
from mmincubation.engine.runner import IncubationRunner, build_layout
from mmincubation.layout import convert_state_dict

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / 'configs' / 'incubate_demo_fashion_mnist.py'
NUM_TRAIN, BATCH, EPOCHS, WORLD = 256, 32, 2, 2
ITERS_PER_EPOCH = NUM_TRAIN // (BATCH * WORLD)
TARGET = 1

pytestmark = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


def tiny_demo_cfg(data_root: str, work_dir: Path) -> Config:
    """The demo config at a few seconds per phase (as in test_pipeline): 256 images, 2 epochs."""
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = str(work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
        cfg[loader].batch_size = BATCH
    cfg.train_dataloader.dataset.indices = NUM_TRAIN
    cfg.val_dataloader.dataset.indices = 64
    cfg.test_dataloader.dataset.indices = 64
    for phase in ('meta', 'incubate', 'finetune', 'e2e'):
        cfg.incubation[phase].train_cfg.max_epochs = EPOCHS
    cfg.param_scheduler[0].warmup = 2
    cfg.default_hooks.logger.interval = 1
    return cfg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    """Meta phase in this process, then `dist_train.sh CONFIG 2 --phase incubate e2e --module 1`."""
    root = tmp_path_factory.mktemp('ddp')
    data_root, work_dir = root / 'data', root / 'work'
    extract_fashion_mnist(DEBIAN_ROOT, data_root)
    cfg = tiny_demo_cfg(str(data_root), work_dir)
    IncubationRunner(cfg, phases=('meta', )).train()
    assert (work_dir / 'meta' / 'meta.pth').is_file()

    # Only the distributed run gets the probe. gloo and CPU DDP come from tools/train.py itself
    # (mmincubation.launcher.setup_launcher), as for a user launching dist_train.sh on CPUs.
    cfg.custom_imports = dict(imports=['ddp_probe'], allow_failed_imports=False)
    for phase in ('incubate', 'e2e'):  # the phases it runs: the meta model's recipe stays the one it was made by
        cfg.incubation[phase].custom_hooks = [dict(type='DDPProbeHook')]
    config = root / 'tiny_demo.py'
    cfg.dump(str(config))

    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), CUDA_VISIBLE_DEVICES='',
               OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join([str(REPO / 'tests'), os.environ.get('PYTHONPATH', '')]))
    command = ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), str(WORLD), '--work-dir', str(work_dir),
               '--phase', 'incubate', 'e2e', '--module', str(TARGET)]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'torchrun failed ({result.returncode}):\n{output[-6000:]}'
    return cfg, work_dir, output, dict(config=config, env=env, root=root)


def load_ranks(phase_dir: Path, stage: str) -> list[dict]:
    return [torch.load(phase_dir / f'rank{rank}_{stage}.pth', weights_only=True) for rank in range(WORLD)]


def assert_identical(states: list[dict]) -> None:
    reference = states[0]
    for other in states[1:]:
        assert reference.keys() == other.keys()
        differing = [key for key in reference if not torch.equal(reference[key], other[key])]
        assert not differing, f'ranks disagree on {differing[:5]}'


def assert_sharded(samples: list[list[list[int]]]) -> None:
    """Per epoch, the ranks trained on disjoint halves that together are the whole training set."""
    assert all(len(rank) == EPOCHS * ITERS_PER_EPOCH for rank in samples)
    for epoch in range(EPOCHS):
        iters = slice(epoch * ITERS_PER_EPOCH, (epoch + 1) * ITERS_PER_EPOCH)
        seen = [[idx for batch in rank[iters] for idx in batch] for rank in samples]
        assert all(len(rank) == NUM_TRAIN // WORLD for rank in seen)
        assert not set(seen[0]) & set(seen[1])
        assert set(seen[0]) | set(seen[1]) == set(range(NUM_TRAIN))


def test_module_incubation_under_ddp_keeps_ranks_equal_and_meta_modules_frozen(ddp_run):
    cfg, work_dir, output, _ = ddp_run
    phase_dir = work_dir / 'incubate' / f'module_{TARGET}'
    before, after = load_ranks(phase_dir, 'before'), load_ranks(phase_dir, 'after')
    assert after[0]['wrapper'] == 'MMDistributedDataParallel'
    assert 'Distributed training: True' in output and f'GPU number: {WORLD}' in output  # MMEngine's env report
    assert_sharded([rank['samples'] for rank in after])
    assert_identical([rank['state_dict'] for rank in before])
    assert_identical([rank['state_dict'] for rank in after])

    layout = build_layout(cfg)
    hybrid = layout.hybrid(TARGET)
    state_before, state = before[0]['state_dict'], after[0]['state_dict']
    target_keys = sorted(key for key in state if hybrid.module_of(key) == TARGET)
    frozen_keys = sorted(key for key in state if hybrid.module_of(key) != TARGET)
    assert target_keys and frozen_keys
    assert after[0]['trainable'] == target_keys  # ViT: no buffers, so every key is a parameter

    # Frozen meta modules: bit-identical to the meta checkpoint, re-keyed into the hybrid.
    meta = torch.load(work_dir / 'meta' / 'meta.pth', weights_only=True)['state_dict']
    others = [module for module in range(layout.num_modules) if module != TARGET]
    expected = convert_state_dict(meta, layout.meta(), hybrid, others)
    assert sorted(expected) == frozen_keys
    changed = [key for key in frozen_keys if not torch.equal(state[key], expected[key])]
    assert not changed, f'frozen parameters changed: {changed[:5]}'

    # The target trained: every one of its tensors moved, and the exported module is what the ranks hold.
    unmoved = [key for key in target_keys if torch.equal(state[key], state_before[key])]
    assert not unmoved, f'target parameters did not move: {unmoved}'
    product = torch.load(phase_dir / f'module_{TARGET}.pth', weights_only=True)['state_dict']
    exported = convert_state_dict(state, hybrid, layout, [TARGET])
    assert product.keys() == exported.keys()
    assert all(torch.equal(product[key], exported[key]) for key in product)


def test_e2e_under_ddp_trains_every_parameter_identically_on_all_ranks(ddp_run):
    cfg, work_dir, _, _ = ddp_run
    phase_dir = work_dir / 'e2e'
    before, after = load_ranks(phase_dir, 'before'), load_ranks(phase_dir, 'after')
    assert after[0]['wrapper'] == 'MMDistributedDataParallel'
    assert_sharded([rank['samples'] for rank in after])
    assert_identical([rank['state_dict'] for rank in before])
    assert_identical([rank['state_dict'] for rank in after])

    state, state_before = after[0]['state_dict'], before[0]['state_dict']
    assert after[0]['trainable'] == sorted(state)
    unmoved = [key for key in state if torch.equal(state[key], state_before[key])]
    assert not unmoved, f'parameters did not move: {unmoved}'
    assert sum(key.startswith('backbone.layers.') and key.endswith('.ln1.weight') for key in state) == 8
    product = torch.load(phase_dir / 'e2e.pth', weights_only=True)['state_dict']
    assert product.keys() == state.keys()
    assert all(torch.equal(product[key], state[key]) for key in product)


def test_dist_test_evaluates_the_e2e_model_on_two_ranks(ddp_run):
    _, work_dir, _, launch = ddp_run
    env = dict(launch['env'], PORT=str(free_port()))
    command = ['bash', str(REPO / 'tools' / 'dist_test.sh'), str(launch['config']), str(work_dir / 'e2e' / 'e2e.pth'),
               str(WORLD), '--work-dir', str(launch['root'] / 'test')]
    result = subprocess.run(command, cwd=launch['root'], env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f'torchrun failed ({result.returncode}):\n{output[-6000:]}'
    assert 'Distributed training: True' in output and f'GPU number: {WORLD}' in output
    assert re.search(r'Epoch\(test\) \[\d+/\d+\]\s+accuracy/top1: \d+\.\d+', output), output[-3000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU launcher fix leaves CUDA machines to MMEngine')
def test_slurm_launcher_on_cpu_takes_its_rendezvous_from_slurms_variables(tmp_path, monkeypatch):
    """``--launcher slurm`` without CUDA: gloo group from SLURM_* (MMEngine's launcher would call set_device)."""
    import torch.distributed as torch_dist

    from mmincubation.launcher import setup_launcher
    scontrol = tmp_path / 'scontrol'  # `scontrol show hostnames node[07-08]` -> one host per line
    scontrol.write_text('#!/bin/sh\nprintf "localhost\\nnode08\\n"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    with socket.socket() as free:
        free.bind(('localhost', 0))
        port = free.getsockname()[1]
    for name in ('MASTER_ADDR', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('MASTER_PORT', str(port))
    monkeypatch.setenv('SLURM_NODELIST', 'node[07-08]')
    for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0').items():
        monkeypatch.setenv(name, value)
    cfg = Config(dict(launcher='slurm'))
    try:
        setup_launcher(cfg)
        assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
        assert (torch_dist.get_rank(), torch_dist.get_world_size()) == (0, 1)
        assert (os.environ['MASTER_ADDR'], os.environ['LOCAL_RANK']) == ('localhost', '0')
        assert cfg.model_wrapper_cfg.device_ids is None
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


# Several jobs on one node: each launcher must pick a rendezvous port nobody else uses, and a port
# already taken must end the job with an error naming it, not a hang (e.g. two tools/slurm_train.sh
# jobs both on 29500: the second one's rank 0 died with EADDRINUSE, its rank 1 joined the first job's
# rendezvous or waited forever).

# A single-node srun: --ntasks local copies of the command with SLURM's per-task variables, the job id
# being its own pid unless SLURM_JOB_ID is set. Like the case's, it does not honour --kill-on-bad-exit,
# so a rank whose rank 0 died must end by itself.
FAKE_SRUN = """#!/usr/bin/env bash
n=1; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) n=${1#--ntasks=}; shift ;;
    -p) shift 2 ;;
    --*=*|--kill-on-bad-exit*) shift ;;
    *) break ;;
  esac
done
jid=${SLURM_JOB_ID:-$$}
pids=()
for i in $(seq 0 $((n-1))); do
  SLURM_JOB_ID=$jid SLURM_PROCID=$i SLURM_NTASKS=$n SLURM_LOCALID=$i SLURM_NODELIST=localhost "$@" &
  pids+=($!)
done
rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc
"""
FAKE_SCONTROL = '#!/usr/bin/env bash\necho 127.0.0.1\n'


@pytest.fixture(scope='module')
def tiny_e2e(tmp_path_factory):
    """A 3-iteration E2E phase (192 images, 2 ranks x 32) and an environment with a one-node fake SLURM."""
    root = tmp_path_factory.mktemp('jobs')
    data_root = root / 'data'
    extract_fashion_mnist(DEBIAN_ROOT, data_root)
    cfg = tiny_demo_cfg(str(data_root), root / 'work')
    cfg.train_dataloader.dataset.indices = 192  # 3 iterations: past tiny_demo_cfg's 2 warm-up iterations
    cfg.val_dataloader.dataset.indices = cfg.test_dataloader.dataset.indices = 32
    cfg.incubation.e2e.train_cfg.max_epochs = 1
    config = root / 'tiny_e2e.py'
    cfg.dump(str(config))
    bin_dir = root / 'bin'
    bin_dir.mkdir()
    for name, body in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items()
           if key not in ('MASTER_ADDR', 'MASTER_PORT', 'PORT', 'NNODES', 'NODE_RANK', 'RANK', 'WORLD_SIZE',
                          'LOCAL_RANK', 'RENDEZVOUS_TIMEOUT', 'SRUN_ARGS') and not key.startswith('SLURM_')}
    env.update(PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', PYTHON=sys.executable, GPUS='2', CUDA_VISIBLE_DEVICES='',
               OMP_NUM_THREADS='1')
    return config, root, env


def start(command: list[str], root: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, 'w') as out:  # a session of its own, so that a hung job can be ended with all its ranks
        return subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def finish(process: subprocess.Popen, timeout: float) -> int | None:
    """The exit status, or None (every process of the job killed) if it is still running after timeout."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
        return None


def test_two_slurm_train_jobs_sharing_a_node_both_train(tiny_e2e, tmp_path):
    config, root, env = tiny_e2e
    jobs = []
    for name in ('a', 'b'):
        command = ['bash', str(REPO / 'tools' / 'slurm_train.sh'), 'part', f'job{name}', str(config),
                   str(tmp_path / name), '--phase', 'e2e']
        jobs.append(start(command, root, env, tmp_path / f'{name}.log'))
        time.sleep(1)
    codes = [finish(job, 240) for job in jobs]
    logs = {name: (tmp_path / f'{name}.log').read_text() for name in 'ab'}
    assert codes == [0, 0], f'exit status {codes} (None: hung)\n' + '\n'.join(
        f'--- job {name}:\n{log[-3000:]}' for name, log in logs.items())
    for name in 'ab':
        assert (tmp_path / name / 'e2e' / 'e2e.pth').is_file(), logs[name][-3000:]
        assert 'Distributed training: True' in logs[name] and f'GPU number: {WORLD}' in logs[name]


def test_slurm_train_on_a_taken_port_fails_fast_naming_it(tiny_e2e, tmp_path):
    config, root, env = tiny_e2e
    with socket.socket() as holder:  # another program listens on the port and never answers
        holder.bind(('127.0.0.1', 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = ['bash', str(REPO / 'tools' / 'slurm_train.sh'), 'part', 'taken', str(config), str(tmp_path / 'w'),
                   '--phase', 'e2e']
        started = time.monotonic()
        job = start(command, root, dict(env, MASTER_PORT=str(port), RENDEZVOUS_TIMEOUT='10'), tmp_path / 'job.log')
        code = finish(job, 90)
        elapsed = time.monotonic() - started
    log = (tmp_path / 'job.log').read_text()
    assert code not in (0, None), f'exit status {code} (None: hung)\n{log[-4000:]}'
    assert elapsed < 60, log[-4000:]
    assert f'port {port} is already in use' in log and 'MASTER_PORT' in log, log[-4000:]  # rank 0
    assert f'could not meet rank 0 at 127.0.0.1:{port}' in log, log[-4000:]  # rank 1, after RENDEZVOUS_TIMEOUT
    assert 'Traceback' not in log, log[-4000:]


def test_two_dist_train_runs_at_once_both_finish(tiny_e2e, tmp_path):
    """Without PORT, every single-node tools/dist_train.sh gets a free port of its own (torchrun --standalone)."""
    config, root, env = tiny_e2e
    runs = [start(['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), str(WORLD), '--work-dir',
                   str(tmp_path / name), '--phase', 'e2e'], root, env, tmp_path / f'{name}.log') for name in 'ab']
    codes = [finish(run, 240) for run in runs]
    logs = {name: (tmp_path / f'{name}.log').read_text() for name in 'ab'}
    assert codes == [0, 0], f'exit status {codes} (None: hung)\n' + '\n'.join(
        f'--- run {name}:\n{log[-3000:]}' for name, log in logs.items())
    for name in 'ab':
        assert (tmp_path / name / 'e2e' / 'e2e.pth').is_file(), logs[name][-3000:]
