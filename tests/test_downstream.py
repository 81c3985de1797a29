"""Downstream use of the incubated ViT (issue: Downstream): configs/downstream/ with stock mmdet/mmseg.

Every config loads and builds; its backbone has exactly the keys and shapes of the upstream classifier
checkpoint; a tiny variant of the ViT-B configs loads a fake assembled checkpoint into the backbone
(pos_embed resized), trains one step with the layer-decay optimizer, and SimpleFPN gives the strides.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import det_sample_64
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmincubation  # noqa: F401
from mmincubation.engine.downstream import resolve_settings

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / 'configs' / 'downstream'
CONFIGS = sorted(DOWNSTREAM.glob('*_vit-*.py'))  # the Swin-B ones: tests/test_swin.py
DET_B = DOWNSTREAM / 'mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py'
SEG_B = DOWNSTREAM / 'upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'
# The classifier each downstream config takes its backbone from (what assembly/fine-tuning writes).
UPSTREAM = {'vit-b': 'vit-base-p16_in1k.py', 'vit-l': 'vit-large-p16_in1k.py', 'vit-h': 'vit-huge-p14_in1k.py'}
EXPECTED = {  # arch, out_indices (seg), layer decay (det, seg), drop path (det)
    'vit-b': dict(arch='base', layers=12, seg_out=(3, 5, 7, 11), det_decay=0.7, seg_decay=0.65, det_dpr=0.1),
    'vit-l': dict(arch='large', layers=24, seg_out=(7, 11, 15, 23), det_decay=0.8, seg_decay=0.9, det_dpr=0.4),
    'vit-h': dict(arch='huge', layers=32, seg_out=(7, 15, 23, 31), det_decay=0.9, seg_decay=0.9, det_dpr=0.5),
}
TINY_ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)


def load(path: Path) -> Config:
    """A downstream config as its runner sees it: settings filled in."""
    return resolve_settings(Config.fromfile(str(path)))


def _arch_of(path: Path) -> str:
    return next(key for key in UPSTREAM if f'_{key}-incubated_' in path.name)


def _registry(cfg: Config):
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS


def test_there_are_det_and_seg_configs_for_every_size_and_schedule():
    names = {path.name for path in CONFIGS}
    for arch in UPSTREAM:
        for schedule in ('1x', '3x'):
            assert f'mask-rcnn_{arch}-incubated_simplefpn_{schedule}_coco.py' in names
            assert f'faster-rcnn_{arch}-incubated_simplefpn_{schedule}_coco.py' in names
        for iters in ('80k', '160k'):
            assert f'upernet_{arch}-incubated_mln_8xb2-{iters}_ade20k-512x512.py' in names
    assert len(CONFIGS) == 18


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_backbone_matches_the_upstream_checkpoint(path, monkeypatch):
    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    cfg = load(path)
    arch = _arch_of(path)
    expected = EXPECTED[arch]
    is_det = path.name.startswith(('mask-rcnn', 'faster-rcnn'))
    assert cfg.default_scope == ('mmdet' if is_det else 'mmseg')
    backbone = cfg.model.backbone
    assert backbone.type == 'mmpretrain.VisionTransformer' and backbone.arch == expected['arch']
    assert backbone.out_type == 'featmap'
    assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
    # the default is the upstream pipeline's product in this repository, wherever the config is read from
    assert Path(backbone.init_cfg.checkpoint).resolve() == \
        ROOT / 'work_dirs' / f'incubate_{arch.replace("-", "_")}' / 'finetune' / 'finetuned.pth'
    assert cfg.runner_type == 'mmincubation.DownstreamRunner'
    assert cfg.custom_hooks == [dict(type='mmdet.NumClassCheckHook')]
    optim = cfg.optim_wrapper
    assert optim.constructor == 'mmincubation.LayerDecayOptimWrapperConstructor'
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.lr == 1e-4
    assert optim.paramwise_cfg.num_layers == expected['layers']
    if is_det:
        assert optim.paramwise_cfg.layer_decay_rate == expected['det_decay']
        assert backbone.drop_path_rate == expected['det_dpr'] and optim.optimizer.weight_decay == 0.1
        assert tuple(backbone.img_size) == (1024, 1024)
        assert cfg.model.neck.type == 'mmincubation.SimpleFPN'
        assert cfg.train_cfg.max_epochs == (36 if '_3x_' in path.name else 12)
        assert cfg.model.roi_head.bbox_head.num_classes == 80 == len(cfg.train_dataloader.dataset.metainfo.classes)
        with_mask = path.name.startswith('mask-rcnn')
        assert (cfg.model.roi_head.mask_head is not None) == with_mask
        assert set(cfg.val_evaluator.metric) == ({'bbox', 'segm'} if with_mask else {'bbox'})
        for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
            annotations = [t for t in loader.dataset.pipeline if t.type == 'LoadAnnotations']
            assert [t.with_mask for t in annotations] == [with_mask]
    else:
        assert optim.paramwise_cfg.layer_decay_rate == expected['seg_decay']
        assert tuple(backbone.out_indices) == expected['seg_out']
        assert cfg.model.pretrained is None and cfg.model.neck.type == 'MultiLevelNeck'
        assert list(cfg.model.neck.scales) == [4, 2, 1, 0.5]
        assert cfg.train_cfg.max_iters == (80000 if '-80k_' in path.name else 160000)
        assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 150
        assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters

    # Build the whole model without allocating it, and compare its backbone with the classifier that
    # the incubation pipeline writes: same keys and shapes (pos_embed is resized on loading).
    models = _registry(cfg)
    with torch.device('meta'):
        model = models.build(cfg.model)
        upstream_cfg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'models' / UPSTREAM[arch]))
        init_default_scope('mmpretrain')
        from mmpretrain.registry import MODELS as PRETRAIN_MODELS
        upstream = PRETRAIN_MODELS.build(upstream_cfg.model).backbone
    ours = {k: v.shape for k, v in model.backbone.state_dict().items()}
    theirs = {k: v.shape for k, v in upstream.state_dict().items()}
    assert set(ours) == set(theirs)
    assert {k for k in ours if ours[k] != theirs[k]} == {'pos_embed'}
    assert len(model.backbone.layers) == expected['layers']
    # the layer-decay constructor's declared depth is the backbone's, which it checks
    assert model.backbone.num_layers == optim.paramwise_cfg.num_layers


def test_checkpoint_path_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv('INCUBATED_CHECKPOINT', '/data/my-vit.pth')
    for path in (DET_B, SEG_B, DOWNSTREAM / 'mask-rcnn_vit-h-incubated_simplefpn_3x_coco.py'):
        assert load(path).model.backbone.init_cfg.checkpoint == '/data/my-vit.pth'


# ----------------------------------------------------------------------------------------------- tiny variants

@pytest.fixture(scope='module')
def fake_checkpoint(tmp_path_factory) -> Path:
    """An assembled ImageClassifier checkpoint of the tiny ViT (32x32 images: 2x2 patches), random weights."""
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    torch.manual_seed(1)
    classifier = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch=TINY_ARCH, img_size=32, patch_size=16, qkv_bias=True,
                      norm_cfg=dict(type='LN', eps=1e-6), out_type='cls_token', final_norm=True),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=32)))
    with torch.no_grad():
        for param in classifier.parameters():
            param.normal_()  # nothing may coincide with a fresh initialisation (ones, zeros)
    state_dict = classifier.state_dict()
    assert any(k.startswith('head.') for k in state_dict) and 'backbone.ln1.weight' in state_dict
    path = tmp_path_factory.mktemp('ckpt') / 'assembled.pth'
    torch.save(dict(meta=dict(mmincubation=dict(phase='assemble')), state_dict=state_dict), path)
    return path


def _tiny_det_cfg(checkpoint: Path, path: Path = DET_B) -> Config:
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(dict(image_size=64, checkpoint=str(checkpoint), classes=('a', 'b', 'c')))
    resolve_settings(cfg)
    cfg.model.backbone.update(arch=TINY_ARCH)
    cfg.model.neck.update(in_channels=32, out_channels=32)
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    for roi in ('bbox_roi_extractor', 'mask_roi_extractor'):
        cfg.model.roi_head[roi].out_channels = 32
    cfg.model.roi_head.bbox_head.update(in_channels=32, conv_out_channels=32, fc_out_channels=64)
    cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32)
    cfg.optim_wrapper.type = 'OptimWrapper'  # AmpOptimWrapper needs a GPU
    cfg.optim_wrapper.paramwise_cfg.num_layers = 4
    return cfg


def _tiny_seg_cfg(checkpoint: Path) -> Config:
    cfg = Config.fromfile(str(SEG_B))
    cfg.merge_from_dict(dict(image_size=64, checkpoint=str(checkpoint), classes=('a', 'b', 'c', 'd')))
    resolve_settings(cfg)
    cfg.model.backbone.update(arch=TINY_ARCH, out_indices=(0, 1, 2, 3))
    bn = dict(type='BN', requires_grad=True)
    cfg.model.neck.update(in_channels=[32] * 4, out_channels=32)
    cfg.model.decode_head.update(in_channels=[32] * 4, channels=32, norm_cfg=bn)
    cfg.model.auxiliary_head.update(in_channels=32, channels=16, norm_cfg=bn)
    cfg.optim_wrapper.paramwise_cfg.num_layers = 4
    return cfg


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _build_and_load(cfg: Config, checkpoint: Path) -> torch.nn.Module:
    """Build the model, run ``init_weights`` and check the backbone holds exactly the checkpoint."""
    models = _registry(cfg)
    torch.manual_seed(0)
    model = models.build(cfg.model)
    logger = MMLogger.get_current_instance()
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        model.init_weights()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    log = '\n'.join(handler.messages)
    assert f'load backbone. in model from: {checkpoint}' in log
    assert 'Resize the pos_embed shape from torch.Size([1, 5, 32]) to torch.Size([1, 17, 32])' in log
    for problem in ('missing keys', 'unexpected key', 'size mismatch', 'do not match'):
        assert problem not in log, log

    source = torch.load(checkpoint, weights_only=True)['state_dict']
    expected = {k[len('backbone.'):]: v for k, v in source.items() if k.startswith('backbone.')}
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(expected)
    from mmpretrain.models.utils import resize_pos_embed
    expected['pos_embed'] = resize_pos_embed(expected['pos_embed'], (2, 2), (4, 4), 'bicubic', 1)
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    return model


def _train_step(model: torch.nn.Module, cfg: Config, inputs: torch.Tensor, samples: list):
    """One optimizer step with the config's optimizer; returns the optim wrapper."""
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith('backbone.layers.')}
    losses = model(inputs, samples, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    optim_wrapper.backward(loss)
    grads = [p.grad for n, p in model.named_parameters() if n.startswith('backbone.')]
    assert grads and all(g is not None for g in grads)
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in before)
    optim_wrapper.step()
    assert all(not torch.equal(model.get_parameter(n), before[n]) for n in before if n.endswith('qkv.weight'))
    return optim_wrapper


def _groups_by_name(model: torch.nn.Module, optim_wrapper) -> dict:
    by_id = {id(p): g for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    counts: dict[int, int] = {}
    for g in optim_wrapper.optimizer.param_groups:
        for p in g['params']:
            counts[id(p)] = counts.get(id(p), 0) + 1
    assert all(n == 1 for n in counts.values())  # no parameter in two groups
    return {name: by_id[id(p)] for name, p in model.named_parameters() if p.requires_grad}


def test_tiny_mask_rcnn_loads_the_checkpoint_and_trains(fake_checkpoint):
    cfg = _tiny_det_cfg(fake_checkpoint)
    model = _build_and_load(cfg, fake_checkpoint)
    sample = det_sample_64()
    optim_wrapper = _train_step(model, cfg, torch.randn(1, 3, 64, 64), [sample])

    groups = _groups_by_name(model, optim_wrapper)
    assert set(groups) == {n for n, p in model.named_parameters() if p.requires_grad}
    base_lr, base_wd, rate = 1e-4, 0.1, 0.7
    expected = {  # name: (lr scale, weight decay) with 4 blocks: stem 0.7**5, block N 0.7**(4-N), rest 1
        'backbone.patch_embed.projection.weight': (rate ** 5, base_wd),
        'backbone.patch_embed.projection.bias': (rate ** 5, 0.),
        'backbone.pos_embed': (rate ** 5, 0.),
        'backbone.cls_token': (rate ** 5, 0.),
        'backbone.layers.0.attn.qkv.weight': (rate ** 4, base_wd),
        'backbone.layers.0.attn.qkv.bias': (rate ** 4, 0.),
        'backbone.layers.0.ln1.weight': (rate ** 4, 0.),
        'backbone.layers.3.attn.proj.weight': (rate, base_wd),
        'backbone.layers.3.ln2.bias': (rate, 0.),
        'backbone.ln1.weight': (1., 0.),
        'neck.stages.0.0.weight': (1., base_wd),  # the first deconvolution
        'neck.stages.0.1.weight': (1., 0.),  # its LayerNorm
        'neck.stages.2.0.conv.weight': (1., base_wd),
        'rpn_head.rpn_conv.0.conv.weight': (1., base_wd),
        'roi_head.bbox_head.fc_cls.weight': (1., base_wd),
        'roi_head.bbox_head.fc_cls.bias': (1., 0.),
    }
    for name, (scale, wd) in expected.items():
        assert groups[name]['lr'] == pytest.approx(base_lr * scale), name
        assert groups[name]['weight_decay'] == wd, name

    # mmpretrain's constructor does the work, with the backbone's depth (issue 12)
    from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

    from mmincubation.engine.layer_decay import LayerDecayOptimWrapperConstructor
    assert issubclass(LayerDecayOptimWrapperConstructor, LearningRateDecayOptimWrapperConstructor)
    assert {group['layer_id'] for group in optim_wrapper.optimizer.param_groups} == set(range(6))  # stem, 4, rest
    # the declared depth is checked against the model
    wrong = copy.deepcopy(cfg.optim_wrapper)
    wrong.paramwise_cfg.num_layers = 12
    with pytest.raises(ValueError, match='num_layers=12 but the backbone has 4'):
        build_optim_wrapper(model, wrong)


def test_tiny_upernet_loads_the_checkpoint_and_trains(fake_checkpoint):
    from mmseg.structures import SegDataSample
    cfg = _tiny_seg_cfg(fake_checkpoint)
    model = _build_and_load(cfg, fake_checkpoint)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 64)))
        samples.append(sample)
    optim_wrapper = _train_step(model, cfg, torch.randn(2, 3, 64, 64), samples)
    groups = _groups_by_name(model, optim_wrapper)
    rate = 0.65
    assert groups['backbone.patch_embed.projection.weight']['lr'] == pytest.approx(1e-4 * rate ** 5)
    assert groups['backbone.layers.1.attn.qkv.weight']['lr'] == pytest.approx(1e-4 * rate ** 3)
    assert groups['backbone.layers.1.attn.qkv.weight']['weight_decay'] == 0.05
    assert groups['backbone.pos_embed']['weight_decay'] == 0.
    assert groups['decode_head.conv_seg.weight']['lr'] == pytest.approx(1e-4)
    assert groups['decode_head.bottleneck.bn.weight']['weight_decay'] == 0.


# ----------------------------------------------------------------------------------------------- SimpleFPN

def test_simple_fpn_gives_strides_4_to_64():
    from mmincubation.registry import MODELS
    init_default_scope('mmdet')
    neck = MODELS.build(dict(type='mmincubation.SimpleFPN', in_channels=32, out_channels=8))
    neck.init_weights()
    assert neck.strides == (4, 8, 16, 32, 64)
    # its channel LayerNorm is mmpretrain's (issue 12): no 2-D LayerNorm of our own
    from mmpretrain.models.utils import LayerNorm2d
    norms = [m for m in neck.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(type(m) is LayerNorm2d for m in norms)
    assert MODELS.get('LN2d') is None
    feature = torch.randn(2, 32, 8, 12)  # a ViT/16 map of a 128x192 image, as the last of a tuple
    outs = neck((torch.randn(2, 32, 8, 12), feature))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 32, 48), (2, 8, 16, 24), (2, 8, 8, 12), (2, 8, 4, 6),
                                              (2, 8, 2, 3)]
    assert all(torch.isfinite(o).all() for o in outs)
    # in_index picks another map of the tuple
    neck.in_index = 0
    torch.testing.assert_close(neck((feature, torch.randn(2, 32, 8, 12)))[2], outs[2])
    with pytest.raises(ValueError, match="out_type='featmap'"):
        neck((torch.randn(2, 32),))


def test_simple_fpn_resamples_patch_14_maps_onto_the_stride_16_grid():
    from mmincubation.models.necks import SimpleFPN
    neck = SimpleFPN(in_channels=16, out_channels=8, num_outs=4, in_stride=14,
                     norm_cfg=dict(type='GN', num_groups=4))
    # 1024x704 with 14 px patches: 74x51 tokens (padded); on the stride-16 grid 64x44
    outs = neck([torch.randn(1, 16, 74, 51)])
    assert [tuple(o.shape[-2:]) for o in outs] == [(256, 176), (128, 88), (64, 44), (32, 22)]
    assert neck.strides == (4, 8, 16, 32)
    with pytest.raises(ValueError, match='not supported'):
        SimpleFPN(in_channels=16, out_channels=8, scale_factors=(3.0, ), num_outs=1)


# Where SimpleFPN's stride-`base_stride` cells take their features from (issue simplefpn-vit-h14-misaligned):
# token i of a patch-s map is centred on pixel s*i + s/2 (PatchEmbed pads bottom/right), and anchors and
# RoIAlign (aligned, scale 1/16) take cell j to be centred on pixel 16j + 8.
DET_CONFIGS = sorted(DOWNSTREAM.rglob('*-rcnn_vit-*.py'))  # with demo/ and examples/


def _centre_error(neck, height: int, width: int) -> float:
    """Max |pixel centre of the feature in cell j - (b*j + b/2)| over all cells of the stride-b level, in px.

    The neck gets a map whose channels hold each token's pixel centre (x, y); its scale-1 stage loses its
    convolutions, so that level is the resampled map itself.
    """
    s, b = neck.in_stride, neck.base_stride
    n_h, n_w = -(-height // s), -(-width // s)  # PatchEmbed pads to a multiple of s
    x_centre = (s * torch.arange(n_w) + s / 2).view(1, n_w).expand(n_h, n_w)
    y_centre = (s * torch.arange(n_h) + s / 2).view(n_h, 1).expand(n_h, n_w)
    fmap = torch.stack([x_centre, y_centre] * (neck.in_channels // 2))[None]
    neck.stages[neck.scale_factors.index(1.0)] = torch.nn.Identity()
    out = neck(fmap)[neck.scale_factors.index(1.0)][0]
    assert out.shape[-2:] == (height // b, width // b)  # one cell per b px of the (padded) input
    if s == b:
        assert torch.equal(out, fmap[0])  # the identity, bit for bit
    x_ideal = (b * torch.arange(width // b) + b / 2).view(1, -1)
    y_ideal = (b * torch.arange(height // b) + b / 2).view(-1, 1)
    return max((out[0] - x_ideal).abs().max().item(), (out[1] - y_ideal).abs().max().item())


def _det_input_sizes(cfg: Config) -> list[tuple[int, int]]:
    """(H, W) of the batches a Mask R-CNN config feeds its backbone, read from the config.

    Training: BatchFixedSizePad's size. Test: the images fit the Resize scale (keep_ratio; mmcv scales are
    (w, h)) and are padded to ``pad_size_divisor``, so every padded height with the full width and vice versa.
    """
    preprocessor = cfg.model.data_preprocessor
    divisor = preprocessor.get('pad_size_divisor', 1)
    sizes = {tuple(aug.size) for aug in preprocessor.get('batch_augments') or [] if aug.type == 'BatchFixedSizePad'}
    assert cfg.test_dataloader.dataset.pipeline == cfg.val_dataloader.dataset.pipeline
    scales = [t.scale for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize']
    assert len(scales) == 1, scales
    width, height = (-(-side // divisor) * divisor for side in scales[0])
    sizes |= {(h, width) for h in range(divisor, height + 1, divisor)}
    sizes |= {(height, w) for w in range(divisor, width + 1, divisor)}
    return sorted(sizes)


@pytest.mark.parametrize('path', DET_CONFIGS, ids=lambda p: p.stem)
def test_simple_fpn_cells_sit_where_anchors_and_roi_align_look(path, monkeypatch):
    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    cfg = load(path)
    neck_cfg = cfg.model.neck
    assert neck_cfg.in_stride == cfg.model.backbone.patch_size
    from mmincubation.models.necks import SimpleFPN
    neck = SimpleFPN(in_channels=8, out_channels=8, scale_factors=neck_cfg.scale_factors, num_outs=neck_cfg.num_outs,
                     in_stride=neck_cfg.in_stride, base_stride=neck_cfg.get('base_stride', 16))
    sizes = _det_input_sizes(cfg)
    if '_vit-h-' in path.name:
        assert (1024, 1024) in sizes and neck.in_stride == 14
    errors = {size: _centre_error(neck, *size) for size in sizes}
    assert max(errors.values()) < 0.01, {size: e for size, e in errors.items() if e >= 0.01}


@pytest.mark.parametrize('size', [(1024, 1024), (768, 1024), (1024, 768), (800, 1344), (1344, 800), (704, 1024),
                                  (32, 32), (64, 96)])
@pytest.mark.parametrize('patch', [14, 16, 8, 15, 1])
def test_simple_fpn_resampling_is_exact_for_any_patch_size(size, patch):
    from mmincubation.models.necks import SimpleFPN
    neck = SimpleFPN(in_channels=4, out_channels=4, num_outs=4, in_stride=patch)
    assert _centre_error(neck, *size) < 0.01


def test_simple_fpn_refuses_a_stride_above_the_base_stride():
    from mmincubation.models.necks import SimpleFPN
    with pytest.raises(ValueError, match='ambiguous'):
        SimpleFPN(in_channels=16, out_channels=8, in_stride=32, base_stride=16)


def test_simple_fpn_keeps_the_dtype_and_passes_gradients_when_resampling():
    from mmincubation.models.necks import SimpleFPN
    neck = SimpleFPN(in_channels=16, out_channels=8, num_outs=4, in_stride=14)
    x = torch.randn(2, 16, 74, 51, requires_grad=True)
    resampled = neck._resample(x)
    assert resampled.shape == (2, 16, 64, 44)
    resampled.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert neck._resample(x.detach().to(torch.bfloat16)).dtype == torch.bfloat16
    torch.testing.assert_close(neck._resample(x.detach().double()), resampled.detach().double(),
                               rtol=1e-4, atol=1e-4)


def test_tiny_vit_h_mask_rcnn_keeps_strides_4_to_64_with_14_px_patches():
    cfg = _tiny_det_cfg(Path('unused.pth'), DOWNSTREAM / 'mask-rcnn_vit-h-incubated_simplefpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    model = _registry(cfg).build(cfg.model)
    assert model.backbone.patch_embed.projection.kernel_size == (14, 14)
    assert model.backbone.layers[0].attn.qkv.bias is None
    feats = model.extract_feat(torch.randn(1, 3, 64, 64))  # 5x5 patches (padded to 70 px) -> 4x4 grid
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


# ------------------------------------------------------------------------ checkpoints that do not fit the backbone

def _retagged(checkpoint: Path, dst: Path, record: dict | None, width: int = 32) -> Path:
    """``checkpoint``'s weights with another mmincubation tag (or none) and, optionally, another width."""
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    state = {key: torch.zeros([width if size == 32 else size for size in value.shape]) for key, value in state.items()}
    torch.save(dict(meta={} if record is None else dict(mmincubation=record), state_dict=state), dst)
    return dst


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_a_backbone_checkpoint_that_does_not_fit_is_refused_before_training(fake_checkpoint, tmp_path, task):
    from mmincubation.checkpoint import CheckpointError
    from mmincubation.engine.runner.fit_checks import check_pretrained_backbone
    tiny_cfg = _tiny_det_cfg if task == 'det' else _tiny_seg_cfg
    # Fits: an assembled / plain classifier checkpoint, pos_embed resized by the ViT (5 -> 17 tokens).
    check_pretrained_backbone(tiny_cfg(fake_checkpoint))
    check_pretrained_backbone(tiny_cfg(_retagged(fake_checkpoint, tmp_path / 'plain.pth', None)))
    refused = {
        'module.pth': (dict(phase='incubate', layout=[2, 2], module=1), 32, r'holds a single incubated module'),
        'meta.pth': (dict(phase='meta', layout=[2, 2]), 32, r'holds a meta model'),
        'wide.pth': (dict(phase='finetune', layout=[2, 2]), 48,
                     r'wide.pth \(keys backbone.\*\) does not fit the model: shape mismatches .*cls_token: \(1, 1, 48'),
    }
    for name, (record, width, message) in refused.items():
        with pytest.raises(CheckpointError, match=message):
            check_pretrained_backbone(tiny_cfg(_retagged(fake_checkpoint, tmp_path / name, record, width)))
    with pytest.raises(CheckpointError,
                       match=r'nowhere.pth does not exist.*; set INCUBATED_CHECKPOINT=.* --cfg-options checkpoint='):
        check_pretrained_backbone(tiny_cfg(tmp_path / 'nowhere.pth'))


def test_train_tool_refuses_a_downstream_backbone_checkpoint_that_does_not_fit(fake_checkpoint, tmp_path):
    from tools.train import main as train
    wide = _retagged(fake_checkpoint, tmp_path / 'wide.pth', dict(phase='finetune', layout=[4]), width=48)
    cfg = _tiny_det_cfg(wide)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.dump(tmp_path / 'det.py')
    with pytest.raises(SystemExit, match=r'^error: checkpoint .*wide.pth \(keys backbone.\*\) does not fit'):
        train([str(tmp_path / 'det.py')])
    assert not (tmp_path / 'work').exists()


# ------------------------------------------------------------------------ UperNet ViT-H/14: exact strides
# Where each level of the UperNet's feature pyramid lands (issue: ViT-H/14 UperNet misaligned): token i of a
# patch-p map covers pixels [p*i, p*(i+1)) of the batch (PatchEmbed pads bottom/right to a multiple of p), so its
# centre is pixel p*i + p/2; MultiLevelNeck resizes the four maps by its scale factors, and the heads resize their
# logits to the label size (training) or to pad_shape / img_shape (predict_by_feat) without looking at strides.
# Every cell j of level k must therefore be centred on pixel (p / scale_k) * (j + 1/2), and after the heads'
# resizes pixel x must get the feature of pixel x. Checked on a map whose channels hold the token centres, with
# the neck's convolutions taken out, for the batch sizes the configs produce (read from them).
SEG_CONFIGS = sorted(DOWNSTREAM.glob('upernet_vit-*.py'))


def _seg_batches(cfg: Config, phase: str) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """(batch size, size the heads resize their logits to, label area) of the batches a UperNet config makes.

    Runs the config's SegDataPreProcessor and takes the target size as mmseg does: the loss resizes to the
    (padded) label size; predict_by_feat to pad_shape or img_shape, and postprocess_result crops the padding off.
    Training: RandomCrop's crop and crops of smaller images. Test ('whole' mode): images after the keep-ratio
    Resize: the 28 sides up to the short side (every residue modulo 2 x 14), some shorter and longer ones up to
    the long side, each once as a height and once as a width.
    """
    from types import SimpleNamespace

    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    from mmseg.structures import SegDataSample
    models = _registry(cfg)
    preprocessor = models.build(copy.deepcopy(cfg.model.data_preprocessor))
    ignore = {cfg.model.decode_head.get('ignore_index', 255), cfg.model.auxiliary_head.get('ignore_index', 255)}
    seg_pad_val = cfg.model.data_preprocessor.get('seg_pad_val', 255)
    batches = []
    if phase == 'train':
        crops = [t.crop_size for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop']
        assert len(crops) == 1, crops
        crop_h, crop_w = crops[0]
        for h, w in {(crop_h, crop_w), (crop_h - 1, crop_w), (300, crop_w), (crop_h, 417), (13, 29)}:
            label = torch.randint(0, 150, (1, h, w))
            sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
            sample.gt_sem_seg = PixelData(data=label.clone())
            data = preprocessor(dict(inputs=[torch.zeros(3, h, w, dtype=torch.uint8)], data_samples=[sample]),
                                training=True)
            seg = data['data_samples'][0].gt_sem_seg.data
            assert torch.equal(seg[:, :h, :w], label)
            padded = torch.ones_like(seg, dtype=torch.bool)
            padded[:, :h, :w] = False
            assert ignore == {seg_pad_val}  # padded label pixels are ignored by both heads' losses
            assert (seg[padded] == seg_pad_val).all()
            assert seg.shape[-2:] == data['inputs'].shape[-2:]
            batches.append((tuple(data['inputs'].shape[-2:]), tuple(seg.shape[-2:]), (h, w)))
        return batches
    assert cfg.model.test_cfg.mode == 'whole', 'slide crops: check the crop sizes like the whole images'
    scales = [t.scale for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize']
    assert len(scales) == 1 and cfg.test_dataloader.dataset.pipeline == cfg.val_dataloader.dataset.pipeline
    short, long = min(scales[0]), max(scales[0])
    sides = sorted(set(range(short - 27, short + 1)) | {27, 28, 29, 100, 683, 1000, long - 1, long})
    head = SimpleNamespace(align_corners=cfg.model.decode_head.align_corners)
    for h, w in zip(sides, reversed(sides)):
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        data = preprocessor(dict(inputs=[torch.zeros(3, h, w, dtype=torch.uint8)], data_samples=[sample]))
        meta = data['data_samples'][0].metainfo
        size = tuple(data['inputs'].shape[-2:])
        target = tuple(BaseDecodeHead.predict_by_feat(head, torch.zeros(1, 1, 2, 2), [meta]).shape[-2:])
        left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
        assert left == top == 0  # padding only at the bottom/right, as the PatchEmbed's
        batches.append((size, target, (int(target[0] - bottom), int(target[1] - right))))
    return batches


def _seg_level_errors(cfg: Config, batch: tuple, pyramid: torch.nn.Module) -> list[float]:
    """Max |pixel centre held - pixel centre wanted| per level of the UperNet's pyramid, in px.

    ``pyramid`` (a MultiLevelNeck built from the config with its convolutions taken out) gets the token-centre
    map of the batch; each level is checked on its own cells, resized to the heads' target size as the FCN head
    and the loss / predict_by_feat do, and through UPerHead's fusion (resized to level 0's size first), over the
    label area. Bilinear resizing repeats the border value outside the outermost centres, for any patch size,
    so pixels within half a token plus half a cell of the batch border are left out.
    """
    from mmseg.models.utils import resize
    (height, width), target, (area_h, area_w) = batch
    p = cfg.model.backbone.patch_size
    align = cfg.model.decode_head.align_corners
    n_h, n_w = -(-height // p), -(-width // p)
    x_centre = (p * torch.arange(n_w) + p / 2).view(1, n_w).expand(n_h, n_w)  # float32: ~2e-4 px at 2048 px
    y_centre = (p * torch.arange(n_h) + p / 2).view(n_h, 1).expand(n_h, n_w)
    fmap = torch.stack([x_centre, y_centre])[None]
    levels = pyramid([fmap] * 4)
    strides = [p / scale for scale in cfg.model.neck.scales]

    def error(values: torch.Tensor, cell: float, margin: float) -> float:
        """values: (1, 2, H', W') on a grid of ``cell`` px; checked where the centre is inside the margin."""
        def kept(n_cells: int, n_tokens: int, area: int) -> slice:  # the cells whose centre is checked
            first = max(math.ceil(margin / cell - 0.5), 0)
            last = min(math.floor((n_tokens * p - margin) / cell - 0.5), math.ceil(area / cell - 0.5) - 1, n_cells - 1)
            return slice(first, max(last + 1, first))

        rows, cols = kept(values.shape[-2], n_h, area_h), kept(values.shape[-1], n_w, area_w)
        values = values[0, :, rows, cols]
        if values.numel() == 0:  # a label area smaller than the border band
            return 0.
        xs = cell * (torch.arange(cols.start, cols.stop, dtype=values.dtype) + 0.5)
        ys = cell * (torch.arange(rows.start, rows.stop, dtype=values.dtype) + 0.5)
        return max((values[0] - xs.view(1, -1)).abs().max().item(), (values[1] - ys.view(-1, 1)).abs().max().item())

    errors = []
    for level, stride in zip(levels, strides):
        margin = p / 2 + stride / 2
        errs = [error(level, stride, margin)]
        errs.append(error(resize(level, size=target, mode='bilinear', align_corners=align), 1.0, margin))
        fused = resize(level, size=levels[0].shape[2:], mode='bilinear', align_corners=align)  # UPerHead
        errs.append(error(resize(fused, size=target, mode='bilinear', align_corners=align), 1.0, margin + strides[0]))
        errors.append(max(errs))
    return errors


def _coordinate_pyramid(cfg: Config):
    """The config's MultiLevelNeck on a 2-channel map (x, y), its 1x1 and 3x3 convolutions taken out."""
    neck_cfg = copy.deepcopy(cfg.model.neck)
    neck_cfg.update(in_channels=[2] * len(neck_cfg.in_channels), out_channels=2)
    neck = _registry(cfg).build(neck_cfg)
    neck.lateral_convs = torch.nn.ModuleList(torch.nn.Identity() for _ in neck.lateral_convs)
    neck.convs = torch.nn.ModuleList(torch.nn.Identity() for _ in neck.convs)
    return neck


@pytest.mark.parametrize('path, phase', [(path, phase) for path in SEG_CONFIGS for phase in ('train', 'test')],
                         ids=lambda x: getattr(x, 'stem', x))
def test_upernet_levels_sit_where_their_strides_say(path, phase, monkeypatch):
    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    cfg = load(path)
    assert cfg.model.neck.type == 'MultiLevelNeck' and cfg.model.backbone.out_type == 'featmap'
    pyramid = _coordinate_pyramid(cfg)
    batches = _seg_batches(cfg, phase)
    errors = {batch: max(_seg_level_errors(cfg, batch, pyramid)) for batch in batches}
    assert max(errors.values()) < 0.01, {batch: e for batch, e in errors.items() if e >= 0.01}
    p = cfg.model.backbone.patch_size
    for size, target, _ in batches:
        assert all(side % (2 * p) == 0 for side in size), size  # the x0.5 level needs an even token count
        assert target == size  # the heads resize to the whole batch, padding included, never stretch it
    if phase == 'train':  # the ViT's position grid is the training token grid: no resizing every step
        img_size = cfg.model.backbone.img_size
        grid = (-(-img_size[0] // p), -(-img_size[1] // p))  # PatchEmbed's init_out_size
        assert {(-(-size[0] // p), -(-size[1] // p)) for size, _, _ in batches} == {grid}
