"""Bytes each phase of a Deep Incubation pipeline needs per GPU, from the byte model of mmincubation.memory.

For ViT-B/L/H (configs/incubate_vit_{b,l,h}.py), ViT-g (mmpretrain's 'eva-g': width 1408, 40 blocks, 1.0B) and
DINOv2-g ('dinov2-g': width 1536, SwiGLU, layer scale, 1.1B), K=4 modules, patch 14/16 at 224 px, each phase's
network (meta model, the most expensive hybrid, fine-tune, E2E) at its recipe's batch per GPU, gradient accumulation
and precision: parameters, gradients, AdamW states and saved activations, with and without activation checkpointing,
and the peak per GPU under DDP and under FSDP over 8 GPUs. ViT-g and DINOv2-g come from configs/incubate_vit_g.py and
configs/incubate_dinov2_g.py where they exist, else from ViT-H's config with the arch swapped (ViT-H's batch sizes).

    python benchmarks/memory_per_phase.py                       # the table, the headline figures, JSON
    python benchmarks/memory_per_phase.py --cpu-check           # also the byte model against measured CPU steps
    python benchmarks/memory_per_phase.py --precision fp32      # every phase in fp32 (the official runs)

The byte model is checked against measured peaks of tiny ViTs on the CPU (tests/test_memory_model.py, --cpu-check);
with CUDA, one step per phase is also measured at a small batch (``torch.cuda.max_memory_allocated``) and printed
beside the model. Writes benchmarks/results/memory_per_phase/memory_per_phase.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('KINETO_LOG_LEVEL', '99')  # the profiler of --cpu-check: no log lines per step

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

import mmincubation  # noqa: F401, E402
from mmincubation import memory  # noqa: E402
from mmincubation.engine.runner import build_layout, phase_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / 'results' / 'memory_per_phase'
#: name -> (own config, the arch swapped into ViT-H's config when that config does not exist)
MODELS = {
    'ViT-B': ('incubate_vit_b.py', None),
    'ViT-L': ('incubate_vit_l.py', None),
    'ViT-H': ('incubate_vit_h.py', None),
    'ViT-g': ('incubate_vit_g.py', dict(backbone=dict(arch='eva-g', qkv_bias=True), head=dict(in_channels=1408))),
    'DINOv2-g': ('incubate_dinov2_g.py', dict(
        backbone=dict(arch='dinov2-g', qkv_bias=True, layer_scale_init_value=1e-5,
                      layer_cfgs=dict(ffn_type='swiglu_fused')), head=dict(in_channels=1536))),
}
#: The settings each phase is shown in: (name, parallelism, activation checkpointing).
SETTINGS = (('DDP', 'ddp', False), ('DDP+ckpt', 'ddp', True), ('FSDP', 'fsdp', False), ('FSDP+ckpt', 'fsdp', True))


def pipeline(name: str) -> tuple[Config, str]:
    """The pipeline config of ``name`` and where it came from."""
    own, arch = MODELS[name]
    path = ROOT / 'configs' / own
    if path.exists():
        cfg, source = Config.fromfile(str(path)), f'configs/{own}'
    else:
        cfg = Config.fromfile(str(ROOT / 'configs' / 'incubate_vit_h.py'))
        cfg.merge_from_dict(dict(model=arch))
        source = f'configs/incubate_vit_h.py with arch {arch["backbone"]["arch"]!r} (no configs/{own}: ViT-H batches)'
    cfg.work_dir = 'unused'
    return cfg, source


def recipe_precision(recipe: Config, override: str) -> memory.Precision:
    """bf16 autocast for an ``AmpOptimWrapper`` in bfloat16 / float16 (2 bytes either way), else fp32."""
    if override != 'recipe':
        return memory.BF16_AMP if override == 'bf16' else memory.FP32
    wrapper = recipe.optim_wrapper
    amp = str(wrapper.get('type', 'OptimWrapper')).split('.')[-1] == 'AmpOptimWrapper'
    return memory.BF16_AMP if amp and wrapper.get('dtype') in ('bfloat16', 'float16', 'bf16', 'fp16', None) \
        else memory.FP32


def phase_rows(name: str, cfg: Config, args: argparse.Namespace) -> list[dict]:
    """Every phase of the pipeline in every setting; the hybrids reduced to the most expensive."""
    layout = build_layout(cfg)
    jobs = [('meta', None)] + [('incubate', k) for k in range(layout.num_modules)] + [('finetune', None),
                                                                                     ('e2e', None)]
    rows = []
    for phase, module in jobs:
        recipe = phase_recipe(cfg, phase, module)
        shape = memory.ViTShape.from_model(recipe.model)
        network = memory.phase_network(layout, phase, module)
        batch = int(recipe.train_dataloader.batch_size)
        accumulation = int(recipe.optim_wrapper.get('accumulative_counts', 1))
        precision = recipe_precision(recipe, args.precision)
        drop_path = (recipe.model.backbone.get('drop_path_rate') or 0.) > 0
        estimates = settings_estimates(shape, network, batch, accumulation, precision, drop_path, args.gpus)
        strategy = str((recipe.get('strategy') or {}).get('type', 'DDP (Runner)')).split('.')[-1]
        rows.append(dict(model=name, phase=phase, module=module, blocks=network.blocks, batch=batch,
                         accumulation=accumulation, precision=precision.name, tokens=shape.tokens,
                         params=network.params(shape), trained=network.trained_params(shape),
                         recipe_strategy=strategy, recipe_checkpointing=bool(recipe.get('activation_checkpointing')),
                         estimates=estimates, shape=shape, network=network, drop_path=drop_path))
    hybrids = [row for row in rows if row['phase'] == 'incubate']
    worst = max(hybrids, key=lambda row: row['estimates']['DDP']['peak'])
    e2e = next(row for row in rows if row['phase'] == 'e2e')
    # the module job at E2E's batch per GPU and accumulation (the same images per optimizer step and GPU)
    worst['estimates_at_e2e_batch'] = settings_estimates(
        worst['shape'], worst['network'], e2e['batch'], e2e['accumulation'], recipe_precision(
            phase_recipe(cfg, 'incubate', worst['module']), args.precision), worst['drop_path'], args.gpus)
    for row in rows:
        del row['shape'], row['network'], row['drop_path']
    return [row for row in rows if row['phase'] != 'incubate' or row is worst]


def settings_estimates(shape: memory.ViTShape, network: memory.Network, batch: int, accumulation: int,
                       precision: memory.Precision, drop_path: bool, gpus: int) -> dict:
    """The byte model of one phase in every setting of :data:`SETTINGS`."""
    estimates = {}
    for label, parallel, checkpointing in SETTINGS:
        setup = memory.Setup(batch, precision=precision, accumulation=accumulation, checkpointing=checkpointing,
                             parallel=parallel, gpus=gpus, drop_path=drop_path)
        estimates[label] = memory.phase_memory(shape, network, setup).to_dict()
    return estimates


def gib(count: float) -> str:
    return f'{count / memory.GIB:.1f}'


def table(rows: list[dict], gpus: int) -> list[str]:
    fsdp = f'FSDP{gpus}'
    lines = [f'per GPU, GiB (2^30 bytes); params / grads / AdamW / activations as held under DDP (replicated); '
             f'peaks under DDP and FSDP over {gpus}, without and with activation checkpointing (ckpt)',
             f'{"model":<9}{"phase":<12}{"batch":>8}{"prec":>6}{"params":>8}{"grads":>7}{"AdamW":>7}{"act":>7}'
             f'{"act ckpt":>9}{"DDP":>7}{"DDP+ckpt":>9}{fsdp:>7}{fsdp + "+ckpt":>11}  recipe runs on']
    for row in rows:
        est = row['estimates']
        phase = row['phase'] + ('' if row['module'] is None else f' {row["module"]}')
        grads = row['trained'] * 4
        runs_on = row['recipe_strategy'] + (' + ckpt' if row['recipe_checkpointing'] else '')
        lines.append(
            f'{row["model"]:<9}{phase:<12}{row["batch"]:>5}x{row["accumulation"]:<2}'
            f'{"bf16" if row["precision"] != "fp32" else "fp32":>6}{gib(row["params"] * 4):>8}{gib(grads):>7}'
            f'{gib(2 * grads):>7}{gib(est["DDP"]["activations"]):>7}{gib(est["DDP+ckpt"]["activations"]):>9}'
            f'{gib(est["DDP"]["peak"]):>7}{gib(est["DDP+ckpt"]["peak"]):>9}{gib(est["FSDP"]["peak"]):>7}'
            f'{gib(est["FSDP+ckpt"]["peak"]):>11}  {runs_on}')
    return lines


def recipe_setting(row: dict) -> str:
    """The setting a phase's recipe trains in: FSDP or DDP, with or without checkpointing."""
    return ('FSDP' if row['recipe_strategy'] == 'FSDPStrategy' else 'DDP') + \
        ('+ckpt' if row['recipe_checkpointing'] else '')


def headlines(rows: list[dict], usable: float, order: list[str]) -> tuple[list[str], dict]:
    """The largest model whose every phase fits one GPU per setting, and the module job / E2E memory ratios."""
    lines, summary = [], dict(usable_bytes=usable, fits={}, ratio={})
    by_model = {name: [row for row in rows if row['model'] == name] for name in order}
    for label, _, _ in SETTINGS:
        fitting = [name for name in order if all(row['estimates'][label]['peak'] <= usable for row in by_model[name])]
        largest = fitting[-1] if fitting else None
        summary['fits'][label] = dict(largest=largest, fitting=fitting)
        lines.append(f'largest ViT whose every phase fits one GPU ({usable / memory.GIB:.0f} GiB usable) with '
                     f'{label:<9}: {largest or "none"}  (fitting: {", ".join(fitting) or "none"})')
    lines.append('most expensive module job / E2E, memory per GPU (same setting in both; "recipes": each phase on '
                 'its recipe\'s strategy and checkpointing):')
    for name in order:
        hybrid = next(row for row in by_model[name] if row['phase'] == 'incubate')
        e2e = next(row for row in by_model[name] if row['phase'] == 'e2e')
        ratios = {label: hybrid['estimates'][label]['peak'] / e2e['estimates'][label]['peak']
                  for label, _, _ in SETTINGS}
        ratios['recipes'] = hybrid['estimates'][recipe_setting(hybrid)]['peak'] / \
            e2e['estimates'][recipe_setting(e2e)]['peak']
        equal = {label: hybrid['estimates_at_e2e_batch'][label]['peak'] / e2e['estimates'][label]['peak']
                 for label, _, _ in SETTINGS}
        summary['ratio'][name] = dict(ratios, module=hybrid['module'], hybrid_batch=hybrid['batch'],
                                      e2e_batch=e2e['batch'], at_e2e_batch=equal)
        lines.append(f'  {name:<9}(module {hybrid["module"]}, {hybrid["batch"]} vs {e2e["batch"]} images per GPU): '
                     + ', '.join(f'{label} {ratio:.2f}' for label, ratio in ratios.items()))
        lines.append(f'  {"":<9} module job at E2E\'s {e2e["batch"]}x{e2e["accumulation"]}: '
                     + ', '.join(f'{label} {ratio:.2f}' for label, ratio in equal.items()))
    if 'ViT-g' in summary['ratio']:
        ratio = summary['ratio']['ViT-g']
        verdict = 'meets' if max(ratio[label] for label, _, _ in SETTINGS) <= 0.35 else 'misses'
        best = min(ratio['at_e2e_batch'].values())
        lines.append(f'goal of the issue, ViT-g K=4 module job <= 0.35 of E2E memory: {verdict} it at the configs\' '
                     f'batches in the same setting (DDP {ratio["DDP"]:.2f}, FSDP+ckpt {ratio["FSDP+ckpt"]:.2f}; '
                     f'at E2E\'s batch at best {best:.2f}); each phase on its recipe\'s setting: '
                     f'{ratio["recipes"]:.2f}')
    return lines, summary


def cuda_rows(name: str, cfg: Config, args: argparse.Namespace) -> list[dict]:
    """``torch.cuda.max_memory_allocated`` of one step per phase at ``--cuda-batch``, beside the byte model (one
    GPU, no wrapper, the recipe's precision)."""
    layout = build_layout(cfg)
    rows = []
    for phase, module in [('meta', None), ('incubate', 1), ('finetune', None)]:
        recipe = phase_recipe(cfg, phase, module)
        recipe.train_dataloader.batch_size = args.cuda_batch
        precision = recipe_precision(recipe, args.precision)
        if precision is memory.FP32 and 'Amp' in str(recipe.optim_wrapper.get('type', '')):
            recipe.optim_wrapper.type = 'OptimWrapper'
            recipe.optim_wrapper.pop('dtype', None)
        for checkpointing in (False, True):
            measured = memory.cuda_step_peak(recipe, args.cuda_batch, checkpointing,
                                             amp=precision is not memory.FP32)
            setup = memory.Setup(args.cuda_batch, precision=precision,
                                 accumulation=int(recipe.optim_wrapper.get('accumulative_counts', 1)),
                                 checkpointing=checkpointing,
                                 drop_path=(recipe.model.backbone.get('drop_path_rate') or 0.) > 0)
            modelled = memory.phase_memory(memory.ViTShape.from_model(recipe.model),
                                           memory.phase_network(layout, phase, module), setup).peak
            rows.append(dict(model=name, phase=phase, module=module, checkpointing=checkpointing,
                             batch=args.cuda_batch, measured=measured, modelled=modelled,
                             error=memory.relative_error(modelled, measured)))
            print(f'  {name:<9}{phase:<9}{"" if module is None else module!s:<3}{"ckpt" if checkpointing else "":<5}'
                  f'measured {gib(measured):>6} GiB  model {gib(modelled):>6} GiB  {rows[-1]["error"]:+.1%}',
                  flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--gpus', type=int, default=8, help='GPUs FSDP shards over (default 8)')
    parser.add_argument('--usable-gib', type=float, default=76.0,
                        help='GiB of one GPU a step may use: an 80 GB card has 79.6 GiB, less the CUDA context, '
                             'cuBLAS / NCCL workspaces and allocator fragmentation (default 76)')
    parser.add_argument('--precision', choices=('recipe', 'fp32', 'bf16'), default='recipe',
                        help="each recipe's optimizer wrapper (AmpOptimWrapper: bf16 autocast), or every phase in one")
    parser.add_argument('--cpu-check', action='store_true',
                        help='also run the byte model against measured CPU steps of tiny ViTs (about a minute)')
    parser.add_argument('--cuda-batch', type=int, default=8, help='batch of the measured CUDA steps')
    parser.add_argument('--no-cuda', action='store_true', help='skip the CUDA measurement')
    args = parser.parse_args(argv)
    if args.gpus < 1 or args.cuda_batch < 1 or args.usable_gib <= 0:
        parser.error('--gpus, --cuda-batch and --usable-gib must be positive')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    rows, sources, order = [], {}, []
    for name in args.models:
        cfg, sources[name] = pipeline(name)
        order.append(name)
        rows += phase_rows(name, cfg, args)
    print('\n'.join(f'{name}: {source}' for name, source in sources.items()))
    print('\n'.join(table(rows, args.gpus)))
    lines, summary = headlines(rows, args.usable_gib * memory.GIB, order)
    print('\n'.join(lines))

    checks = []
    if args.cpu_check:
        print('byte model against one measured step on the CPU (tiny ViTs, profiler allocation events):')
        base = Config.fromfile(str(ROOT / 'configs' / 'incubate_vit_b.py'))
        for case in memory.CPU_CHECK_CASES:
            checks.append(memory.cpu_check(base, case))
            check = checks[-1]
            print(f'  {check["case"]:<34} measured {check["measured"] / 2**20:7.2f} MiB  model '
                  f'{check["modelled"] / 2**20:7.2f} MiB  {check["error"]:+6.1%}  (without activations '
                  f'{check["error_without_activations"]:+6.1%})', flush=True)
    cuda = []
    if not args.no_cuda and torch.cuda.is_available():
        print(f'one step on {torch.cuda.get_device_name()} at batch {args.cuda_batch}, '
              'torch.cuda.max_memory_allocated beside the byte model (one GPU):')
        for name in order:
            cuda += cuda_rows(name, pipeline(name)[0], args)
    else:
        print('no CUDA device: the GPU measurement (torch.cuda.max_memory_allocated per phase) is skipped',
              file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / 'memory_per_phase.json'
    out.write_text(json.dumps(dict(date=time.strftime('%Y-%m-%d'), torch=torch.__version__, gpus=args.gpus,
                                   precision=args.precision, sources=sources, rows=rows, summary=summary,
                                   cpu_check=checks, cuda=cuda), indent=1))
    print(f'wrote {out.relative_to(ROOT)} ({time.perf_counter() - started:.0f} s)')


if __name__ == '__main__':
    main()
