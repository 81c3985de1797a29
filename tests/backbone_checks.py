"""Checks every backbone's pipeline must pass (tests/test_swin.py, tests/test_eva02.py, ...)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmincubation.checkpoint import META_KEY, save_atomic
from mmincubation.engine.runner import build_layout, phase_recipe

#: The demo's data and schedule cut to a few seconds a phase (128 training images, batch 32).
TINY = dict(train_dataloader=dict(batch_size=32, dataset=dict(indices=128)),
            val_dataloader=dict(batch_size=128, dataset=dict(indices=128)),
            default_hooks=dict(logger=dict(type='LoggerHook', interval=4)),
            param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
                             dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=4)])


def grown_logits_equal_meta(cfg: Config, tmp_path: Path, keep_shifts: bool = True, channels: int = 1,
                            size: int = 28) -> list[bool]:
    """Per hybrid and for the assembly: do grown modules compute the meta model's logits (at step 0)?"""
    torch.manual_seed(0)
    meta = MODELS.build(phase_recipe(cfg, 'meta').model).eval()
    meta.init_weights()
    layout = build_layout(cfg)
    path = tmp_path / 'meta.pth'
    save_atomic(dict(meta={META_KEY: dict(phase='meta', holds='meta', **layout.tag())}, state_dict=meta.state_dict()),
                path)
    images = torch.randn(4, channels, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = meta(images, mode='tensor')
    results, modules = [], {}
    for target in range(layout.num_modules):
        model_cfg = copy.deepcopy(phase_recipe(cfg, 'incubate', target).model)
        if not keep_shifts:
            model_cfg.backbone.pop('stage_cfgs')
        hybrid = MODELS.build(dict(model_cfg, meta_checkpoint=str(path), module_init='meta')).eval()
        hybrid.init_weights()
        with torch.no_grad():
            results.append(torch.allclose(hybrid(images, mode='tensor'), expected, atol=1e-5))
        modules.update(hybrid.export_module())
    full = MODELS.build(phase_recipe(cfg, 'finetune').model).eval()
    full.load_state_dict(modules, strict=True)
    with torch.no_grad():
        results.append(torch.allclose(full(images, mode='tensor'), expected, atol=1e-5))
    return results


def run_tiny_pipeline(config: Path, data_root: str, work_dir: Path,
                      phases: tuple[str, ...] = ('meta', 'incubate', 'assemble', 'finetune')) -> Config:
    """The pipeline of ``config`` on :data:`TINY` data, two epochs a phase, into ``work_dir``."""
    from mmincubation.engine.runner import IncubationRunner
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(TINY)
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.test_dataloader = cfg.val_dataloader
    for phase in ('meta', 'incubate', 'finetune', 'e2e'):
        cfg.incubation[phase].train_cfg = dict(max_epochs=2)
    cfg.incubation.finetune.param_scheduler = [dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=0)]
    cfg.work_dir = str(work_dir)
    IncubationRunner(cfg, phases=phases).train()
    return cfg


def scored_in_fresh_process(cfg: Config, checkpoint: Path, tmp_path: Path, root: Path) -> str:
    """stdout + stderr of ``tools/test.py`` on ``checkpoint`` with ``cfg`` dumped, in a new process."""
    import os
    import subprocess
    import sys
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    env = dict(os.environ, PYTHONPATH=str(root))
    result = subprocess.run([sys.executable, 'tools/test.py', str(config), str(checkpoint),
                             '--work-dir', str(tmp_path / 'test')], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


def check_stock_product(cfg: Config, work_dir: Path, backbone_class: str, kind: str, tmp_path: Path,
                        root: Path) -> dict:
    """The tiny pipeline's assembly loads strictly into the stock ``backbone_class`` classifier and is tagged
    ``kind``; its fine-tuned product beats chance and ``tools/test.py`` scores it in a fresh process as its
    record says. Returns the records by ``(phase, module)`` for the backbone's own checks."""
    from mmincubation.engine.runner.records import load_records
    stock = MODELS.build(copy.deepcopy(cfg.model)).eval()
    assert type(stock.backbone).__name__ == backbone_class
    checkpoint = torch.load(work_dir / 'assembled.pth', weights_only=True)
    stock.load_state_dict(checkpoint['state_dict'], strict=True)
    assert checkpoint['meta'][META_KEY]['backbone'] == kind
    records = {(r['phase'], r['module']): r for r in load_records(work_dir)}
    top1 = records['finetune', None]['test_metrics']['accuracy/top1']
    assert top1 > 15  # 10 classes: chance is 10 %
    output = scored_in_fresh_process(cfg, work_dir / 'finetune/finetuned.pth', tmp_path, root)
    assert f'accuracy/top1: {top1:.4f}' in output
    return records
