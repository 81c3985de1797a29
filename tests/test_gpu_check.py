"""The prepared CUDA check script's code paths, dry-run on a CPU at tiny sizes (no GPU needed)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_measures_every_cpu_section(tmp_path):
    out = tmp_path / 'gpu_check.json'
    subprocess.run([sys.executable, 'benchmarks/gpu_check.py', '--device', 'cpu', '--small',
                    '--sections', 'matmul', 'vit_b_step', 'mae', '--out', str(out),
                    '--work-dir', str(tmp_path / 'work')], cwd=ROOT, check=True, capture_output=True)
    results = json.loads(out.read_text())
    assert results['matmul']['tflops'] > 0
    step = results['vit_b_step']
    assert step['blocks'] == 4 and step['embed'] == 64 and step['seconds_per_step'] > 0
    assert 0 < step['mfu_datasheet'] < 1
    mae = results['mae']
    # the hybrid MAE encoder (3 of 4 blocks, 1 trained) is cheaper than the E2E one, and its ideal ratios are fractions
    assert 0 < mae['ideal_blocks'] < 1 and 0 < mae['ideal_train_flops'] < 1
    assert mae['hybrid_seconds'] > 0 and mae['e2e_seconds'] > 0
