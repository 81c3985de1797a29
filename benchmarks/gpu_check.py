"""CUDA checks of the paths CPU tests cannot reach, measured side by side in one process.

Run by ``benchmarks/gpu_check.sh`` on a machine with one GPU; every section prints its figures and
adds them to one JSON file. A section that fails prints its error and the others still run.

Sections:

* ``matmul``: the bf16 matrix-product rate of this GPU (8192^3, mean of 10 after 3 warm-ups): the
  ceiling MFU is also given against.
* ``vit_b_step``: one ViT-B/16 training step (224 px, bf16 autocast through MMEngine's
  ``AmpOptimWrapper``, AdamW), built from ``configs/incubate_vit_b.py``'s full model, with MFU from
  analytic FLOPs (3 x forward: 2 FLOPs per multiply-add of the patch embedding, qkv/proj/FFN
  matrices and attention; head, norms and softmax left out).
* ``fsdp``: module 1's hybrid and the full model of the same config under PyTorch FSDP on one GPU
  (NCCL, world size 1): one ``FullyShardedDataParallel`` unit per transformer block, so frozen meta
  blocks never share a unit with trainable ones (``use_orig_params=True``), bf16 mixed precision;
  loss against the unwrapped model on the same batch, and peak memory. Then MMEngine's own
  ``FSDPStrategy.prepare`` on the hybrid (the path ``runner_type='FlexibleRunner'`` takes).
* ``mae``: mmpretrain's MAE ViT-B/16 (75 % masking, its decoder) step at bf16, E2E (12 encoder blocks
  trained) against an incubation step of module 1 of K=4 (1 frozen meta block, 3 trainable blocks,
  2 frozen meta blocks, decoder trained), with two ideal ratios: blocks, and training FLOPs (blocks
  before the module need no backward, blocks after it need activation gradients only).

    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --device cpu --small   # a dry run of every section on a CPU
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

sys.path.insert(0, str(Path(__file__).parent))
from step_cost import synthetic_batch  # noqa: E402

import mmincubation  # noqa: E402,F401
from mmincubation.engine.runner import phase_recipe  # noqa: E402
from mmincubation.engine.runner.phase_config import as_fp32  # noqa: E402

#: bf16 dense peak of an H100/H200 SXM by the vendor's datasheet, FLOP/s.
DATASHEET_BF16 = 989e12


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(step, device: str, iters: int, warmup: int) -> float:
    """Mean seconds of ``step()`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def reset_peak(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith('cuda') else None


def vit_forward_flops(embed: int, depth: int, tokens: int, ffn: int, patch_pixels: int) -> float:
    """Forward FLOPs of one image (2 per multiply-add): patch embedding, then per block qkv + proj
    (4 d^2 per token), FFN (2 d f per token) and attention (QK^T and AV: 2 N^2 d)."""
    per_block = tokens * (4 * embed * embed + 2 * embed * ffn) + 2 * tokens * tokens * embed
    return 2.0 * (depth * per_block + tokens * patch_pixels * embed)


def section_matmul(args: argparse.Namespace) -> dict:
    n = 256 if args.small else 8192
    a = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    seconds = timed(lambda: a @ b, args.device, iters=10, warmup=3)
    return dict(n=n, tflops=2 * n**3 / seconds / 1e12)


def build_phase_model(cfg: Config, phase: str, module: int | None, device: str, amp: bool):
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    recipe = phase_recipe(cfg, phase, module)
    if amp:
        recipe.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    else:  # FP32, the bf16 GPU configs included (MMEngine's AmpOptimWrapper needs a GPU)
        as_fp32(recipe.optim_wrapper)
    if recipe.get('data_preprocessor') is not None:  # as MMEngine's Runner gives the model its preprocessor
        recipe.model.setdefault('data_preprocessor', recipe.data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(recipe.model).to(device)
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, recipe.optim_wrapper)
    return recipe, model, optim_wrapper


def load_config(args: argparse.Namespace) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    cfg.incubation.module_init = 'scratch'  # no meta model needed: a step costs the same
    if args.small:  # a dry run on a CPU: 4 blocks of width 64 at 32 px
        cfg.model.backbone.update(arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
                                  img_size=32, patch_size=16)
        cfg.model.head.in_channels = 64
        cfg.incubation.num_modules = 2
    return cfg


def section_vit_b_step(args: argparse.Namespace) -> dict:
    cfg = load_config(args)
    recipe, model, optim_wrapper = build_phase_model(cfg, 'e2e', None, args.device, amp=args.device != 'cpu')
    data = synthetic_batch(recipe, args.batch)
    reset_peak(args.device)
    seconds = timed(lambda: model.train_step(data, optim_wrapper), args.device, args.iters, args.warmup)
    backbone = model.backbone
    embed = backbone.embed_dims
    depth = len(backbone.layers)
    ffn = backbone.layers[0].ffn.layers[0][0].out_features
    patch = backbone.patch_embed.projection
    tokens = backbone.patch_resolution[0] * backbone.patch_resolution[1] + 1
    flops = 3 * args.batch * vit_forward_flops(embed, depth, tokens, ffn,
                                               patch.in_channels * patch.kernel_size[0] * patch.kernel_size[1])
    return dict(batch=args.batch, seconds_per_step=seconds, images_per_second=args.batch / seconds,
                train_tflops=flops / seconds / 1e12, mfu_datasheet=flops / seconds / DATASHEET_BF16,
                peak_gib=peak_gib(args.device), blocks=depth, embed=embed)


def fsdp_wrap(model: torch.nn.Module, device: str):
    from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    bf16 = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32)
    return FullyShardedDataParallel(
        model, auto_wrap_policy=ModuleWrapPolicy({TransformerEncoderLayer}), mixed_precision=bf16,
        use_orig_params=True, device_id=torch.device(device) if device.startswith('cuda') else None)


def init_single_process_group(device: str) -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        return
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29531')
    os.environ.setdefault('RANK', '0')
    os.environ.setdefault('LOCAL_RANK', '0')
    os.environ.setdefault('WORLD_SIZE', '1')
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo', rank=0, world_size=1)


def fsdp_one(cfg: Config, phase: str, module: int | None, args: argparse.Namespace) -> dict:
    recipe, model, _ = build_phase_model(cfg, phase, module, args.device, amp=False)
    data = model.data_preprocessor(synthetic_batch(recipe, args.batch), True)
    reference = copy.deepcopy(model)
    with torch.no_grad(), torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16):
        reference_loss = float(reference(**data, mode='loss')['loss'])
    del reference
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    wrapped = fsdp_wrap(model, args.device)
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-4)
    losses = []

    def step() -> None:
        loss = wrapped(**data, mode='loss')['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    reset_peak(args.device)
    seconds = timed(step, args.device, args.iters, warmup=2)
    return dict(seconds_per_step=seconds, peak_gib=peak_gib(args.device), trainable_params=trainable,
                first_loss=losses[0], reference_bf16_loss=reference_loss, last_loss=losses[-1])


def section_fsdp(args: argparse.Namespace) -> dict:
    init_single_process_group(args.device)
    cfg = load_config(args)
    result = {'incubate_module_1': fsdp_one(cfg, 'incubate', 1, args), 'e2e': fsdp_one(cfg, 'e2e', None, args)}
    result['hybrid_over_e2e_seconds'] = (result['incubate_module_1']['seconds_per_step']
                                         / result['e2e']['seconds_per_step'])
    try:  # MMEngine's own strategy, as runner_type='FlexibleRunner' with strategy=dict(type='FSDPStrategy') uses it
        from mmengine._strategy import FSDPStrategy
        _, model, _ = build_phase_model(cfg, 'incubate', 1, 'cpu', amp=False)
        from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        # A policy instance, not a dict: MMEngine 0.10.7 turns a dict into partial(type, **rest) and calls it
        # as a function policy, which a class policy such as ModuleWrapPolicy is not ("got an unexpected
        # keyword argument 'module'", seen on a GPU).
        strategy = FSDPStrategy(model_wrapper=dict(
            auto_wrap_policy=ModuleWrapPolicy({TransformerEncoderLayer}), use_orig_params=True))
        wrapped, optim_wrapper = strategy.prepare(model, optim_wrapper=dict(
            type='AmpOptimWrapper', dtype='bfloat16', optimizer=dict(type='AdamW', lr=1e-4)))
        data = synthetic_batch(phase_recipe(cfg, 'incubate', 1), args.batch)
        log = wrapped.train_step(data, optim_wrapper)
        result['mmengine_fsdp_strategy'] = dict(ok=True, loss=float(log['loss']))
    except Exception as error:  # noqa: BLE001  (reported, the figure above stands)
        result['mmengine_fsdp_strategy'] = dict(ok=False, error=f'{type(error).__name__}: {error}'[:400])
    return result


def mae_model(layers: int, trainable: range | None, args: argparse.Namespace):
    """mmpretrain's MAE ViT-B/16 with ``layers`` encoder blocks; only blocks in ``trainable`` (and the
    decoder) train when given, as in the incubation of one module."""
    from mmengine.hub import get_config
    from mmpretrain.registry import MODELS
    full = get_config('mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py')
    cfg = full.model
    cfg.setdefault('data_preprocessor', full.data_preprocessor)
    embed, heads, ffn = (64, 2, 256) if args.small else (768, 12, 3072)
    cfg.backbone.arch = dict(embed_dims=embed, num_layers=layers, num_heads=heads, feedforward_channels=ffn)
    cfg.neck.embed_dim = embed
    if args.small:
        cfg.backbone.img_size = 32
        cfg.neck.update(num_patches=4, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=2)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg).to(args.device)
        model.init_weights()
    if trainable is not None:
        for name, param in model.backbone.named_parameters():
            param.requires_grad = any(name.startswith(f'layers.{i}.') for i in trainable)
    return model


def mae_step(model, args: argparse.Namespace) -> tuple[float, float | None]:
    from mmengine.optim import build_optim_wrapper
    size = 32 if args.small else 224
    inputs = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
    from mmpretrain.structures import DataSample
    # default_collate's form, as mmpretrain's MAE configs load data: one stacked batch of views
    data = dict(inputs=inputs, data_samples=[DataSample() for _ in range(args.batch)])
    wrapper = build_optim_wrapper(model, dict(
        type='AmpOptimWrapper' if args.device != 'cpu' else 'OptimWrapper',
        **(dict(dtype='bfloat16') if args.device != 'cpu' else {}),
        optimizer=dict(type='AdamW', lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)))
    reset_peak(args.device)
    seconds = timed(lambda: model.train_step(data, wrapper), args.device, args.iters, args.warmup)
    return seconds, peak_gib(args.device)


def section_mae(args: argparse.Namespace) -> dict:
    depth, k = (4, 2) if args.small else (12, 4)
    per_module = depth // k
    e2e_seconds, e2e_peak = mae_step(mae_model(depth, None, args), args)
    # module 1: meta block 0 (frozen), module 1's blocks 1..per_module (trained), meta blocks after (frozen)
    hybrid_layers = k - 1 + per_module
    hybrid_seconds, hybrid_peak = mae_step(mae_model(hybrid_layers, range(1, 1 + per_module), args), args)
    embed, tokens, dec_embed, dec_tokens, dec_depth = ((64, 5, 32, 5, 1) if args.small
                                                       else (768, 50, 512, 197, 8))
    enc_block = vit_forward_flops(embed, 1, tokens, 4 * embed, 0)
    dec = vit_forward_flops(dec_embed, dec_depth, dec_tokens, 4 * dec_embed, 0)
    # training FLOPs: forward 1, activation gradients 1, weight gradients 1 (x the forward's)
    e2e_train = 3 * (depth * enc_block + dec)
    hybrid_train = 1 * enc_block + 3 * per_module * enc_block + 2 * (k - 1 - 1) * enc_block + 3 * dec
    return dict(batch=args.batch, e2e_seconds=e2e_seconds, hybrid_seconds=hybrid_seconds,
                ratio=hybrid_seconds / e2e_seconds, ideal_blocks=hybrid_layers / depth,
                ideal_train_flops=hybrid_train / e2e_train, e2e_peak_gib=e2e_peak, hybrid_peak_gib=hybrid_peak)


SECTIONS = dict(matmul=section_matmul, vit_b_step=section_vit_b_step, fsdp=section_fsdp, mae=section_mae)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/incubate_vit_b.py')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--small', action='store_true', help='tiny sizes: a dry run of the code paths')
    parser.add_argument('--sections', nargs='+', choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument('--work-dir', default='work_dirs/gpu_check')
    parser.add_argument('--out', default='gpu_check.json')
    args = parser.parse_args(argv)
    if args.small:
        args.batch = min(args.batch, 4)
        args.iters = min(args.iters, 2)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')  # no per-tensor init_weights messages
    results = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if args.device != 'cpu' else 'cpu')
    for name in args.sections:
        started = time.perf_counter()
        try:
            results[name] = SECTIONS[name](args)
        except Exception as error:  # noqa: BLE001  (one failing section must not hide the others)
            traceback.print_exc()
            results[name] = dict(error=f'{type(error).__name__}: {error}'[:400])
        print(f'[{name}] {time.perf_counter() - started:.0f} s: {json.dumps(results[name])}', flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
