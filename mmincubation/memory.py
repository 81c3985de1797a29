"""Bytes one training step of each phase's network needs per GPU: a byte model of a ViT step, and its measurement.

The model (pure functions of the network's shape, batch and setup; every size in **bytes**) counts what a training
step of mmpretrain's ``VisionTransformer`` + ``VisionTransformerClsHead`` under MMEngine's ``OptimWrapper`` and
torch's AdamW keeps alive, and where the step peaks:

* **parameters**: every parameter of the phase's network, fp32 (``OptimWrapper`` and ``AmpOptimWrapper`` alike:
  autocast casts on the fly, so there is no fp32 master copy beside a bf16 one: the parameters *are* fp32).
* **gradients**: fp32, trained parameters only (a hybrid freezes everything but its module,
  :class:`~mmincubation.models.IncubationClassifier`). They exist from the backward pass until ``zero_grad``
  (``set_to_none``) after the step; with gradient accumulation (the configs' ``accumulative_counts`` 2 and 4) they
  are held through the next micro-batches' forward passes too.
* **optimizer**: AdamW's two fp32 moments per trained parameter (``exp_avg``, ``exp_avg_sq``; the per-tensor ``step``
  scalars are left out). The step itself needs a temporary of all trained parameters' size on a GPU (torch's
  ``foreach`` implementation, the default for CUDA tensors: ``_foreach_sqrt`` of the second moments), two of the
  largest parameter's size on the CPU (the per-tensor implementation).
* **activations**: the tensors autograd saves for the backward pass, per block as torch saves them
  (``torch.autograd.graph.saved_tensors_hooks``, checked in tests/test_memory_model.py). A pre-norm block
  ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``, trained, saves (B batch, N tokens, d width, f FFN width, h heads):
  ln1's and ln2's inputs (the residual stream, 2 BNd) and their mean / rstd (4 BN, fp32), the qkv Linear's input
  (BNd), q, k, v (3 BNd, one storage), the attention output (BNd: the proj Linear's input is a view of it), the
  fc1 input (BNd), GELU's input and fc2's input (2 BNf), attention's log-sum-exp (B h N, fp32): 8 BNd + 2 BNf.
  SwiGLU (DINOv2-g, hidden width s): w12's output (2 BNs), silu's output (BNs), w3's input (BNs) instead of 2 BNf;
  layer scale: the inputs of gamma1 / gamma2 (2 BNd). A *frozen* block that gradients still flow through (a
  hybrid's meta blocks after module k) saves less: torch saves a Linear's input only when its weight needs a
  gradient, so it keeps ln1 / ln2 inputs, q, k, v, the attention output, GELU's input (6 BNd + BNf; SwiGLU:
  w12's and silu's outputs, 3 BNs), no layer-scale inputs. Blocks before the first trained parameter (a hybrid's
  meta blocks before module k > 0: frozen stem, frozen blocks, inputs that need no gradient) save nothing.
  **Attention** is modelled as torch's fused kernels save it: flash attention on the CPU (torch 2.x picks it for
  these shapes) and flash / memory-efficient attention on a GPU (q, k, v, output, log-sum-exp; no B h N^2 matrix).
  mmpretrain's ``MultiheadAttention`` calls ``F.scaled_dot_product_attention``; the math fallback would save the
  B h N^2 attention matrix besides and is not modelled. Drop-path masks (B numbers per branch) are left out.
  **Precision**: fp32 (the configs' ``OptimWrapper``) or bf16 autocast (``AmpOptimWrapper(dtype='bfloat16')``):
  under autocast, tensors Linear / attention / GELU produce are bf16, the residual stream and LayerNorm inputs stay
  fp32 (LayerNorm autocasts to fp32; fp32 residual + bf16 branch is fp32), and each Linear whose backward is needed
  also saves its bf16 weight copy.
* **activation checkpointing** (:func:`mmincubation.compat.turn_on_activation_checkpointing`, non-reentrant, every
  block of the network): each block in the backward region keeps only its input (BNd, residual precision); during
  its backward one block is recomputed, its saved tensors live again.
* **transients**: what lives only while one block runs, not saved: in the forward pass, a block that saves
  nothing (no grad, or checkpointed) holds fc1's and GELU's outputs at once (2 BNf; SwiGLU 4 BNs), a frozen block in
  the backward region GELU's output and ln2's (BNf + BNd); in the backward pass, a trained block's FFN input
  gradient (BNf; SwiGLU BNs + BNd), a frozen block's GELU input and output gradients (2 BNf + BNd; SwiGLU 3 BNs), plus
  one BNd with drop path (its ``div`` and ``mul``). These were read off the CPU allocator's timeline of one fp32 step
  of a width-64 ViT (tests/test_memory_model.py), then checked without refitting on another shape and under bf16
  autocast; GPU kernels' own workspaces may differ (the CUDA check of benchmarks/memory_per_phase.py shows by how
  much).

**Parallelism** per GPU: DDP replicates everything and adds its gradient buckets (``gradient_as_bucket_view`` is
off in MMEngine's ``MMDistributedDataParallel``: a second fp32 copy of the trained gradients, allocated once and
counted here). FSDP over N GPUs (``FULL_SHARD``, one unit per block and one root unit with the stem and tail,
``use_orig_params``, as :class:`~mmincubation.engine.runner.strategies.PhaseFSDPStrategy` wraps): parameters,
gradients and optimizer states divided by N, plus the units gathered at once: the root unit all along, one block
unit in the forward pass, two in the backward pass (``BACKWARD_PRE`` prefetch), with one or two units' unsharded
gradients before their reduce-scatter; activations are not sharded. With gradient accumulation MMEngine's
``OptimWrapper.optim_context`` enters FSDP's ``no_sync()``, which keeps the *unsharded* gradients of all trained
parameters between the micro-batches (torch's FSDP ``no_sync`` documentation): counted as such.

**Peak**: the larger of the forward pass (persistent state, saved tensors so far, one block's forward transient),
the backward pass (blocks in reverse: saved tensors of the blocks not yet back-propagated, the gradients made so
far, one block's backward transient) and the optimizer step. Not modelled: the CUDA context, cuBLAS / NCCL
workspaces and the caching allocator's fragmentation (``torch.cuda.max_memory_allocated`` does not count them
either), data-loader memory on the host.

The measurement (:func:`measure_train_step`) runs one real step (the data preprocessor with Mixup / CutMix, forward,
backward, AdamW step) of a phase's model built from its recipe, and reads the CPU allocator's allocation and free
events from torch's profiler (``profile_memory=True``): their running sum in time order peaks at the bytes the step
allocates above what was there before it (parameters, optimizer states, gradients held from earlier micro-batches,
which are counted from their storages).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .layout import ModuleLayout

GIB = 2**30


@dataclass(frozen=True)
class ViTShape:
    """What the byte model needs of a ViT classifier: widths, heads, tokens, image, classes.

    ``ffn`` is the FFN's hidden width as built: mmcv's FFN ``feedforward_channels``; SwiGLU's hidden width
    ``s = (int(2/3 f) + 7) // 8 * 8`` (mmpretrain's ``SwiGLUFFNFused``).
    """

    width: int
    heads: int
    ffn: int
    patch: int
    image: int
    in_channels: int = 3
    num_classes: int = 1000
    qkv_bias: bool = True
    swiglu: bool = False
    layer_scale: bool = False

    @property
    def tokens(self) -> int:
        """``(image / patch)^2`` patches plus the class token."""
        return (self.image // self.patch)**2 + 1

    @classmethod
    def from_model(cls, model: Mapping) -> ViTShape:
        """The shape of an mmpretrain ``ImageClassifier`` config with a ViT backbone (``arch`` a zoo name or dict).

        Raises:
            ValueError: a backbone other than a ViT, or an image that is not square.
        """
        from .backbones import VIT, spec_of
        backbone = model['backbone']
        if spec_of(backbone) is not VIT:
            raise ValueError(f'the byte model knows ViTs only, got model.backbone.type={backbone["type"]!r}')
        arch = VIT.resolve_arch(backbone)
        layer_cfgs = backbone.get('layer_cfgs') or {}
        if not isinstance(layer_cfgs, Mapping):
            raise ValueError('model.backbone.layer_cfgs per layer are not modelled; give one dict')
        swiglu = layer_cfgs.get('ffn_type', 'origin') == 'swiglu_fused'
        ffn = int(arch['feedforward_channels'])
        if swiglu:
            ffn = (int(ffn * 2 / 3) + 7) // 8 * 8
        image = backbone.get('img_size', 224)
        if not isinstance(image, int):
            if len(set(image)) != 1:
                raise ValueError(f'model.backbone.img_size {image}: the byte model takes square images')
            image = image[0]
        head = model.get('head') or {}
        return cls(width=int(arch['embed_dims']), heads=int(arch['num_heads']), ffn=ffn,
                   patch=int(backbone.get('patch_size', 16)), image=int(image),
                   in_channels=int(backbone.get('in_channels', 3)), num_classes=int(head.get('num_classes', 1000)),
                   qkv_bias=bool(backbone.get('qkv_bias', True)), swiglu=swiglu,
                   layer_scale=float(backbone.get('layer_scale_init_value', 0.) or 0.) > 0)


# ---------------------------------------------------------------------------------------------------- parameters

def block_linear_params(shape: ViTShape) -> int:
    """Weights (not biases) of one block's Linear layers: qkv, proj, and fc1 + fc2 or SwiGLU's w12 + w3."""
    d, f = shape.width, shape.ffn
    return 4 * d * d + (3 * d * f if shape.swiglu else 2 * d * f)


def block_params(shape: ViTShape) -> int:
    """Parameters of one ``TransformerEncoderLayer`` (mmpretrain 1.2.0)."""
    d, f = shape.width, shape.ffn
    biases = (3 * d if shape.qkv_bias else 0) + d + (2 * f + d if shape.swiglu else f + d)
    return block_linear_params(shape) + biases + 4 * d + (2 * d if shape.layer_scale else 0)


def stem_params(shape: ViTShape) -> int:
    """Patch embedding (a convolution with bias), class token, position embedding."""
    d = shape.width
    return shape.in_channels * shape.patch**2 * d + d + d + shape.tokens * d


def tail_params(shape: ViTShape) -> int:
    """Final LayerNorm and the linear head."""
    return 2 * shape.width + shape.width * shape.num_classes + shape.num_classes


# ----------------------------------------------------------------------------------------------------- networks

@dataclass(frozen=True)
class Network:
    """A phase's network: its blocks in order, which of them train, whether the stem and tail train."""

    trained: tuple[bool, ...]
    stem_trained: bool
    tail_trained: bool

    @property
    def blocks(self) -> int:
        return len(self.trained)

    @property
    def first_in_backward(self) -> int:
        """The first block whose activations the backward pass needs: 0 when the stem trains, else the first
        trained block (a hybrid's module k); the blocks before it run without saving anything."""
        if self.stem_trained:
            return 0
        return next((i for i, trained in enumerate(self.trained) if trained), self.blocks)

    def params(self, shape: ViTShape) -> int:
        return stem_params(shape) + self.blocks * block_params(shape) + tail_params(shape)

    def trained_params(self, shape: ViTShape) -> int:
        return (stem_params(shape) * self.stem_trained + sum(self.trained) * block_params(shape)
                + tail_params(shape) * self.tail_trained)


def phase_network(full: ModuleLayout, phase: str, module: int | None = None) -> Network:
    """The network ``phase`` trains: the meta model and the full model train everything, the hybrid of ``module``
    (incubate) its module's blocks, with the stem when it is module 0 and the tail when it is module K-1."""
    if phase == 'incubate':
        hybrid = full.hybrid(module)
        own = set(hybrid.blocks_of(module))
        return Network(tuple(block in own for block in range(hybrid.total_depth)), module == 0,
                       module == full.num_modules - 1)
    layout = full.meta() if phase == 'meta' else full
    return Network((True, ) * layout.total_depth, True, True)


# ----------------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Precision:
    """Bytes per element: parameters, gradients and optimizer states (``param``), tensors that Linear layers,
    attention and GELU produce (``compute``), the residual stream and LayerNorm inputs (``residual``)."""

    name: str
    compute: int
    residual: int = 4
    param: int = 4

    @property
    def autocast(self) -> bool:
        return self.compute != self.param


FP32 = Precision('fp32', 4)
BF16_AMP = Precision('bf16 autocast', 2)


@dataclass(frozen=True)
class Setup:
    """How a phase trains on each GPU: batch per GPU, precision, gradient accumulation (micro-batches per
    optimizer step), activation checkpointing of every block, parallelism (``'single'``, ``'ddp'``, ``'fsdp'``)
    over ``gpus``, drop path on, and AdamW's ``foreach`` step (a GPU's default; the CPU steps tensor by tensor)."""

    batch: int
    precision: Precision = FP32
    accumulation: int = 1
    checkpointing: bool = False
    parallel: str = 'single'
    gpus: int = 1
    drop_path: bool = True
    foreach: bool = True

    def __post_init__(self) -> None:
        if self.parallel not in ('single', 'ddp', 'fsdp'):
            raise ValueError(f"parallel must be 'single', 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.batch < 1 or self.accumulation < 1 or self.gpus < 1:
            raise ValueError(f'batch, accumulation and gpus must be positive, got {self.batch}, {self.accumulation}, '
                             f'{self.gpus}')


# -------------------------------------------------------------------------------------------------- activations

def _ffn_saved(shape: ViTShape, trained: bool) -> int:
    """Elements per token the FFN saves past its input: trained GELU FFN 2f (GELU's input and output), SwiGLU 4s
    (w12's output 2s, silu's output s, w3's input s); frozen: f, 3s (no Linear inputs)."""
    if shape.swiglu:
        return (4 if trained else 3) * shape.ffn
    return (2 if trained else 1) * shape.ffn


def block_saved_bytes(shape: ViTShape, batch: int, precision: Precision, trained: bool) -> int:
    """Bytes a block in the backward region saves for backward (module docstring): trained, or frozen with
    gradients flowing through it."""
    d, bn = shape.width, batch * shape.tokens
    c, r = precision.compute, precision.residual
    residual = 2 * r * d                                   # ln1 and ln2 inputs
    attention = c * (3 * d + d)                            # q, k, v; attention output (= proj input)
    linear_inputs = c * (d + d) if trained else 0          # qkv and fc1 inputs (LayerNorm outputs)
    layer_scale = c * 2 * d if trained and shape.layer_scale else 0
    per_token = residual + attention + linear_inputs + layer_scale + c * _ffn_saved(shape, trained)
    stats = bn * 4 * 4 + batch * shape.heads * shape.tokens * 4  # two LayerNorms' mean, rstd; log-sum-exp
    weights = c * block_linear_params(shape) if precision.autocast else 0  # autocast's bf16 weight copies
    return bn * per_token + stats + weights


def block_forward_transient(shape: ViTShape, batch: int, precision: Precision, kind: str) -> int:
    """Bytes a block holds beyond what it saves while it runs forward: ``kind`` ``'trained'``, ``'frozen'``
    (in the backward region) or ``'unsaved'`` (no grad, or checkpointed)."""
    bn, c, d = batch * shape.tokens, precision.compute, shape.width
    if kind == 'unsaved':
        return bn * c * (4 * shape.ffn if shape.swiglu else 2 * shape.ffn)
    if kind == 'frozen':
        return bn * (c * (2 * shape.ffn if shape.swiglu else shape.ffn) + precision.residual * d)
    return bn * precision.residual * d


def block_backward_transient(shape: ViTShape, batch: int, precision: Precision, trained: bool,
                             drop_path: bool) -> int:
    """Bytes of gradient buffers while a block back-propagates, beyond its saved tensors (module docstring)."""
    bn, c, d = batch * shape.tokens, precision.compute, shape.width
    if trained:
        ffn = shape.ffn + d if shape.swiglu else shape.ffn
    else:
        ffn = 3 * shape.ffn if shape.swiglu else 2 * shape.ffn + d
    return bn * (c * ffn + (4 * d if drop_path else 0))


def input_bytes(shape: ViTShape, batch: int) -> int:
    """The batch as the model sees it: normalised images and their Mixup / CutMix mix (fp32), one-hot and mixed
    labels."""
    return batch * (2 * shape.in_channels * shape.image**2 * 4 + 2 * shape.num_classes * 4)


def tail_saved_bytes(shape: ViTShape, batch: int, precision: Precision, trained: bool) -> int:
    """The final LayerNorm's input and statistics; its output, whose class-token row the trained fp32 head keeps
    (a view holds the whole storage; under autocast the head saves a bf16 copy of the row instead); the loss's
    log-softmax."""
    bn, d = batch * shape.tokens, shape.width
    saved = bn * precision.residual * d + bn * 8 + 3 * batch * shape.num_classes * 4
    if trained:
        saved += batch * d * precision.compute if precision.autocast else bn * precision.residual * d
    return saved


# ------------------------------------------------------------------------------------------------------- totals

@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU of one phase's step: persistent state, activations saved for backward (at the end of the
    forward pass), and the peak (``peak_at``: ``'forward'``, ``'backward'`` or ``'step'``)."""

    params: int
    grads: int
    optimizer: int
    buffers: int
    activations: int
    peak: int
    peak_at: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def phase_memory(shape: ViTShape, network: Network, setup: Setup, activations: bool = True) -> MemoryEstimate:
    """The byte model of one training step of ``network`` (module docstring): per GPU, in bytes.

    ``params`` are all parameters held (FSDP: the shards), ``grads`` the gradients held at the peak's phase of the
    step (FSDP with accumulation: unsharded), ``optimizer`` AdamW's moments, ``buffers`` DDP's gradient buckets or
    FSDP's gathered units (at most), ``activations`` what the forward pass saves for backward (with checkpointing,
    the blocks' inputs). ``activations=False`` leaves out all activation memory (saved, recomputed and transient
    tensors): the model a test shows to be wrong.
    """
    p, b = setup.precision, setup.batch
    shards = setup.gpus if setup.parallel == 'fsdp' else 1
    params = network.params(shape) * p.param
    trained = network.trained_params(shape) * p.param
    block = block_params(shape) * p.param
    root = (stem_params(shape) + tail_params(shape)) * p.param
    held_params = params // shards
    optimizer = 2 * trained // shards
    full_grads = trained if setup.parallel != 'fsdp' or setup.accumulation > 1 else trained // shards
    buckets = trained if setup.parallel == 'ddp' else 0
    gathered_forward = root + block if setup.parallel == 'fsdp' else 0
    gathered_backward = root + 2 * block if setup.parallel == 'fsdp' else 0
    unsharded_grads = 2 * block if setup.parallel == 'fsdp' and setup.accumulation == 1 else 0
    persistent = held_params + optimizer + buckets + input_bytes(shape, b)
    accumulated = full_grads if setup.accumulation > 1 else 0  # held through the forward pass

    first = network.first_in_backward
    saved = [block_saved_bytes(shape, b, p, network.trained[i]) if activations and i >= first else 0
             for i in range(network.blocks)]
    kept = [b * shape.tokens * shape.width * p.residual if activations and i >= first else 0
            for i in range(network.blocks)]
    stored = kept if setup.checkpointing else saved
    stem_saved = b * shape.in_channels * shape.image**2 * p.compute \
        if activations and network.stem_trained and p.autocast else 0
    tail = tail_saved_bytes(shape, b, p, network.tail_trained) if activations else 0

    def forward_kind(i: int) -> str:
        if i < first or setup.checkpointing:
            return 'unsaved'
        return 'trained' if network.trained[i] else 'frozen'

    forward, so_far = 0, stem_saved
    for i in range(network.blocks):
        transient = block_forward_transient(shape, b, p, forward_kind(i)) if activations else 0
        forward = max(forward, so_far + transient)
        so_far += stored[i]
    activations = so_far + tail
    forward = persistent + accumulated + gathered_forward + max(forward, activations)

    grads_made = tail_params(shape) * p.param if network.tail_trained else 0
    backward = 0
    for i in reversed(range(first, network.blocks)):
        if network.trained[i]:
            grads_made += block
        live = sum(stored[:i + 1]) + stem_saved
        if setup.checkpointing:  # block i recomputed: its saved tensors live again, its input was kept already
            live += saved[i] - kept[i]
        live += block_backward_transient(shape, b, p, network.trained[i], setup.drop_path) if activations else 0
        grads = accumulated if setup.accumulation > 1 else (
            grads_made // shards + (unsharded_grads if setup.parallel == 'fsdp' else 0))
        backward = max(backward, live + grads)
    backward = persistent + gathered_backward + backward

    step_temp = trained // shards if setup.foreach else 2 * p.param * max(
        3 * shape.width**2, (2 if shape.swiglu else 1) * shape.width * shape.ffn, shape.width * shape.num_classes)
    # FSDP with accumulation: the unsharded gradients of no_sync() and the shards reduced from them
    step_grads = full_grads + (trained // shards if setup.parallel == 'fsdp' and setup.accumulation > 1 else 0)
    step = persistent + step_grads + step_temp
    peak, peak_at = max((forward, 'forward'), (backward, 'backward'), (step, 'step'))
    grads = full_grads if peak_at != 'forward' or setup.accumulation > 1 else 0
    return MemoryEstimate(params=held_params, grads=grads, optimizer=optimizer,
                          buffers=buckets + (gathered_backward if setup.parallel == 'fsdp' else 0),
                          activations=activations, peak=peak, peak_at=peak_at)


# ------------------------------------------------------------------------------------------------- measurement

def profiled_peak(step) -> int:
    """Bytes ``step()`` allocates on the CPU above what was allocated before it, at its peak: the running sum, in
    time order, of the allocation (+) and free (-) events torch's profiler records with ``profile_memory=True``.
    Frees of blocks allocated before the profiler started are not recorded, so they never lower the sum."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((event for event in prof.profiler.kineto_results.events() if event.name() == '[memory]'),
                    key=lambda event: event.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages of ``tensors`` (None skipped)."""
    storages = {}
    for tensor in tensors:
        if tensor is not None:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@dataclass(frozen=True)
class MeasuredStep:
    """One step measured: bytes held before it (parameters, buffers, optimizer states, gradients held from the
    earlier micro-batches of an accumulation window) and the step's own peak above them."""

    before: int
    above: int

    @property
    def peak(self) -> int:
        return self.before + self.above


def synthetic_batch(shape: ViTShape, batch: int) -> dict:
    """Random uint8 images and labels in the form mmpretrain's data preprocessor takes."""
    import torch
    from mmpretrain.structures import DataSample
    inputs = [torch.randint(0, 256, (shape.in_channels, shape.image, shape.image), dtype=torch.uint8)
              for _ in range(batch)]
    return dict(inputs=inputs, data_samples=[DataSample().set_gt_label(i % shape.num_classes) for i in range(batch)])


def build_for_training(recipe, device: str = 'cpu'):
    """``recipe.model`` (with the recipe's data preprocessor, as MMEngine's runner gives it) initialised on
    ``device`` in training mode, and its optimizer wrapper; MMEngine's per-parameter log lines silenced."""
    import logging

    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    logger = MMLogger.get_current_instance()
    level = logger.level
    model_cfg = recipe.model.copy()
    if recipe.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', recipe.data_preprocessor)
    try:
        logger.setLevel(logging.ERROR)  # also 'X is skipped since its requires_grad=False' of frozen parameters
        with DefaultScope.overwrite_default_scope(recipe.get('default_scope', 'mmpretrain')):
            model = MODELS.build(model_cfg)
            model.init_weights()
            model = model.to(device)
            model.train()
            optim_wrapper = build_optim_wrapper(model, recipe.optim_wrapper)
    finally:
        logger.setLevel(level)
    return model, optim_wrapper


def tiny_vit_pipeline(cfg, width: int = 64, depth: int = 8, heads: int = 4, ffn: int = 256, num_modules: int = 4,
                      classes: int = 10, dinov2: bool = False):
    """A copy of the ViT pipeline config ``cfg`` (e.g. configs/incubate_vit_b.py: its phases' batch augments, drop
    path, accumulation, AdamW) at a tiny ViT on 32x32 images of 65 tokens (patch 4), modules from scratch, fp32
    (``AmpOptimWrapper`` refuses CPUs; :func:`measure_train_step` adds autocast when asked); ``dinov2``: layer scale
    and SwiGLU FFN. What the CPU check of the byte model trains."""
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = 'unused'
    cfg.incubation.num_modules = num_modules
    cfg.incubation.module_init = 'scratch'
    cfg.model.backbone.update(arch=dict(embed_dims=width, num_layers=depth, num_heads=heads, feedforward_channels=ffn),
                              img_size=32, patch_size=4)
    if dinov2:
        cfg.model.backbone.update(layer_scale_init_value=1e-5, layer_cfgs=dict(ffn_type='swiglu_fused'))
    cfg.model.head.update(in_channels=width, num_classes=classes)
    if cfg.get('data_preprocessor') is not None:
        cfg.data_preprocessor.num_classes = classes
    cfg.optim_wrapper.type = 'OptimWrapper'
    for key in ('dtype', 'loss_scale'):
        cfg.optim_wrapper.pop(key, None)
    return cfg


#: The CPU check's cases: (tiny pipeline settings, phase, module, activation checkpointing, bf16 autocast, batch).
#: The transients were read off the first shape's timelines; the last two cases are another shape.
CPU_CHECK_CASES = (
    (dict(), 'meta', None, False, False, 32),
    (dict(), 'meta', None, True, False, 32),
    (dict(), 'incubate', 1, False, False, 32),
    (dict(), 'incubate', 1, True, False, 32),
    (dict(), 'incubate', 0, False, False, 32),
    (dict(), 'incubate', 3, True, False, 32),
    (dict(), 'finetune', None, False, False, 32),
    (dict(), 'finetune', None, True, False, 32),
    (dict(), 'incubate', 1, False, True, 32),
    (dict(), 'meta', None, True, True, 32),
    (dict(dinov2=True), 'incubate', 1, False, False, 32),
    (dict(dinov2=True), 'incubate', 0, True, True, 32),
    (dict(width=96, depth=6, heads=6, ffn=288, num_modules=3, classes=100), 'incubate', 1, False, False, 16),
    (dict(width=96, depth=6, heads=6, ffn=288, num_modules=3, classes=100), 'finetune', None, True, False, 16),
)


def cpu_check_case_name(case: Sequence) -> str:
    """``'vit64-incubate1-ckpt-bf16-b32'``."""
    settings, phase, module, checkpointing, autocast, batch = case
    return '-'.join([('dinov2' if settings.get('dinov2') else 'vit') + str(settings.get('width', 64)),
                     phase + ('' if module is None else str(module)), 'ckpt' if checkpointing else 'saved',
                     'bf16' if autocast else 'fp32', f'b{batch}'])


def cpu_check(cfg, case: Sequence) -> dict:
    """One case of :data:`CPU_CHECK_CASES` on the tiny version of the ViT pipeline ``cfg``: the measured peak, the
    modelled one, and the model without activations (bytes, and their errors relative to the measured peak)."""
    from .engine.runner.phase_config import build_layout, phase_recipe
    settings, phase, module, checkpointing, autocast, batch = case
    tiny = tiny_vit_pipeline(cfg, **settings)
    recipe = phase_recipe(tiny, phase, module)
    setup = Setup(batch, precision=BF16_AMP if autocast else FP32,
                  accumulation=recipe.optim_wrapper.get('accumulative_counts', 1), checkpointing=checkpointing,
                  drop_path=(recipe.model.backbone.get('drop_path_rate') or 0.) > 0, foreach=False)
    shape, network = ViTShape.from_model(recipe.model), phase_network(build_layout(tiny), phase, module)
    measured = measure_train_step(recipe, batch, checkpointing, autocast).peak
    modelled = phase_memory(shape, network, setup).peak
    without = phase_memory(shape, network, setup, activations=False).peak
    return dict(case=cpu_check_case_name(case), measured=measured, modelled=modelled, without_activations=without,
                error=relative_error(modelled, measured), error_without_activations=relative_error(without, measured))


def _autocast_on_cpu(optim_wrapper) -> None:
    """Run ``optim_wrapper``'s forward passes under bf16 autocast on the CPU, as MMEngine's ``AmpOptimWrapper``
    does on a GPU (which refuses CPUs): its ``optim_context`` wraps the data preprocessor and forward pass."""
    import torch
    context = optim_wrapper.optim_context

    @contextlib.contextmanager
    def autocast_context(model):
        with context(model), torch.autocast(device_type='cpu', dtype=torch.bfloat16):
            yield

    optim_wrapper.optim_context = autocast_context


def measure_train_step(recipe, batch: int, checkpointing: bool = False, autocast: bool = False) -> MeasuredStep:
    """Build ``recipe``'s model and run MMEngine's training step on a synthetic batch (data preprocessor with the
    recipe's batch augments, forward, backward, and the AdamW step at the end of an accumulation window) on the
    CPU; measure the last micro-batch of the second window (optimizer states exist, the window's earlier gradients
    are held), its peak from the profiler (:func:`profiled_peak`).

    ``checkpointing`` recomputes every block of the network in the backward pass
    (:func:`mmincubation.compat.turn_on_activation_checkpointing`); ``autocast`` runs the forward pass under bf16
    autocast (the recipe's optimizer wrapper must be an fp32 ``OptimWrapper``: ``AmpOptimWrapper`` refuses CPUs)."""
    import torch

    from .compat import turn_on_activation_checkpointing
    from .engine.runner.phase_config import network_blocks
    shape = ViTShape.from_model(recipe.model)
    model, optim_wrapper = build_for_training(recipe)
    if checkpointing:
        turn_on_activation_checkpointing(model, network_blocks(recipe.model))
    if autocast:
        _autocast_on_cpu(optim_wrapper)
    window = optim_wrapper._accumulative_counts
    optim_wrapper.initialize_count_status(model, 0, 100 * window)
    data = synthetic_batch(shape, batch)
    for _ in range(2 * window - 1):
        model.train_step(data, optim_wrapper)
    params = list(model.parameters())
    states = [value for state in optim_wrapper.optimizer.state.values() for value in state.values()
              if torch.is_tensor(value)]
    before = _storage_bytes(params + list(model.buffers()) + states + [param.grad for param in params])
    return MeasuredStep(before, profiled_peak(lambda: model.train_step(data, optim_wrapper)))


def cuda_step_peak(recipe, batch: int, checkpointing: bool = False, amp: bool = False) -> int | None:
    """``torch.cuda.max_memory_allocated`` of the last micro-batch of the second accumulation window of
    ``recipe``'s model on the GPU (as :func:`measure_train_step`); None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    from .compat import turn_on_activation_checkpointing
    from .engine.runner.phase_config import network_blocks
    recipe = copy.deepcopy(recipe)
    if amp:
        recipe.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    shape = ViTShape.from_model(recipe.model)
    model, optim_wrapper = build_for_training(recipe, 'cuda')
    if checkpointing:
        turn_on_activation_checkpointing(model, network_blocks(recipe.model))
    window = optim_wrapper._accumulative_counts
    optim_wrapper.initialize_count_status(model, 0, 100 * window)
    data = synthetic_batch(shape, batch)
    for _ in range(2 * window - 1):
        model.train_step(data, optim_wrapper)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    model.train_step(data, optim_wrapper)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, optim_wrapper
    with contextlib.suppress(Exception):
        torch.cuda.empty_cache()
    return peak


def relative_error(model: int, measured: int) -> float:
    """``(model - measured) / measured``."""
    return (model - measured) / measured


def format_bytes(count: float) -> str:
    """GiB with two decimals."""
    return f'{count / GIB:.2f}'


__all__: Sequence[str] = (
    'GIB', 'ViTShape', 'Network', 'Precision', 'FP32', 'BF16_AMP', 'Setup', 'MemoryEstimate', 'MeasuredStep',
    'block_params', 'stem_params', 'tail_params', 'block_linear_params', 'phase_network', 'block_saved_bytes',
    'block_forward_transient', 'block_backward_transient', 'input_bytes', 'tail_saved_bytes', 'phase_memory',
    'profiled_peak', 'measure_train_step', 'cuda_step_peak', 'synthetic_batch', 'build_for_training',
    'relative_error', 'format_bytes', 'tiny_vit_pipeline', 'CPU_CHECK_CASES', 'cpu_check_case_name', 'cpu_check')
