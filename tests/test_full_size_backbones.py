"""EVA-02 and ConvNeXt at full size: the pipelines configs/incubate_{eva02,convnext}_{b,l}.py, their E2E twins and
the downstream configs that take their products, built on the meta device (no memory, no data, no training).

Block counts of every phase's network, the full model's parameters against mmpretrain's own metafiles (read from
the installed package), the E2E twin against the pipeline's e2e phase, and every tensor of the product's backbone
reaching mmdet's / mmseg's backbone.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import mmpretrain
import pytest
import torch
import yaml
from mmdet.engine.optimizers.layer_decay_optimizer_constructor import get_layer_id_for_convnext
from mmengine.config import Config

from mmincubation.backbones import EVA02, spec_of
from mmincubation.checkpoint import META_KEY, CheckpointError
from mmincubation.engine.downstream import resolve_settings
from mmincubation.engine.runner import build_layout, phase_recipe
from mmincubation.engine.runner.fit_checks import build_on_meta, check_pretrained_backbone

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
MMPRETRAIN_CONFIGS = Path(mmpretrain.__file__).parent / '.mim' / 'configs'


@dataclass(frozen=True)
class FullSize:
    """What one full-size pipeline must build: its K=4 modules' depths, the blocks per stage of the meta model, of
    each module's hybrid and of the full model, and the mmpretrain metafile entry its full model is counted against
    (``family/metafile.yml``, the model's name) with the parameters that entry has and ours has not."""

    module_depths: tuple[int, ...]
    meta: tuple[int, ...]
    hybrids: tuple[tuple[int, ...], ...]
    full: tuple[int, ...]
    family: str
    metafile_model: str
    metafile_extra: int = 0


def pos_embed_at_448_beyond_224(width: int) -> int:
    """Parameters of an EVA-02's 448 px position table (32x32 patches of 14 px) beyond its 224 px one (16x16): the
    metafile counts mmpretrain's eva02/*_in1k.py at 448 px, our configs train at 224 px; nothing else differs (the
    same 1000-class head)."""
    return (32 ** 2 - 16 ** 2) * width


CONVNEXT_STAGES = dict(module_depths=(9, 9, 9, 9), meta=(1, 1, 4, 1),
                       hybrids=((3, 3, 6, 1), (1, 1, 12, 1), (1, 1, 12, 1), (1, 1, 9, 3)), full=(3, 3, 27, 3))
PIPELINES = {
    # mmpretrain's own ConvNeXt-B recipe run (83.66 top-1); ConvNeXt-L's only ImageNet-1K-only entry is a converted
    # official checkpoint, of the same config
    'convnext_b': FullSize(**CONVNEXT_STAGES, family='convnext', metafile_model='convnext-base_32xb128_in1k'),
    'convnext_l': FullSize(**CONVNEXT_STAGES, family='convnext', metafile_model='convnext-large_3rdparty_in1k'),
    'eva02_b': FullSize((3, 3, 3, 3), (4, ), ((6, ), ) * 4, (12, ), 'eva02',
                        'vit-base-p14_eva02-in21k-pre_3rdparty_in1k-448px', pos_embed_at_448_beyond_224(768)),
    'eva02_l': FullSize((6, 6, 6, 6), (4, ), ((9, ), ) * 4, (24, ), 'eva02',
                        'vit-large-p14_eva02-in21k-pre_in21k-medft_3rdparty_in1k-448px',
                        pos_embed_at_448_beyond_224(1024)),
}


def metafile_parameters(family: str, name: str) -> int:
    """The ``Parameters`` of model ``name`` in the installed mmpretrain's ``configs/<family>/metafile.yml``."""
    metafile = yaml.safe_load((MMPRETRAIN_CONFIGS / family / 'metafile.yml').read_text())
    (model, ) = [model for model in metafile['Models'] if model['Name'] == name]
    return int(model['Metadata']['Parameters'])


def stage_blocks(model: torch.nn.Module) -> tuple[int, ...]:
    """Blocks per stage of a built ConvNeXt or EVA-02 classifier (a hybrid included)."""
    backbone = model.backbone
    return tuple(len(stage) for stage in backbone.stages) if hasattr(backbone, 'stages') else (len(backbone.layers), )


def unscoped(value: object) -> object:
    """``value`` without the ``_scope_`` keys MMEngine adds to the dicts of a ``pkg::`` base."""
    if isinstance(value, dict):
        return {key: unscoped(item) for key, item in value.items() if key != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [unscoped(item) for item in value]
    return value


def num_params(model: torch.nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


def with_full_layout(cfg: Config) -> Config:
    """``cfg`` (a plain config of the full model) with its arch written out as the pipeline's phases write it."""
    cfg = copy.deepcopy(cfg)
    layout = build_layout(cfg)
    spec_of(cfg.model.backbone).set_layout(cfg.model.backbone, layout, layout)
    return cfg


@pytest.mark.parametrize('name', PIPELINES)
def test_full_size_pipelines_build_every_phase_with_mmpretrains_parameter_count(name: str) -> None:
    expected = PIPELINES[name]
    cfg = Config.fromfile(str(CONFIGS / f'incubate_{name}.py'))
    layout = build_layout(cfg)
    assert layout.depths == expected.module_depths and layout.stage_depths == expected.full
    full = build_on_meta(phase_recipe(cfg, 'finetune'))
    assert stage_blocks(full) == expected.full
    # mmpretrain's count of its own config of the model (the same 1000-class head; EVA-02: at 448 px there)
    published = metafile_parameters(expected.family, expected.metafile_model)
    assert num_params(full) == published - expected.metafile_extra
    assert num_params(full) == pytest.approx(published, rel=0.01)
    assert stage_blocks(build_on_meta(phase_recipe(cfg, 'meta'))) == expected.meta
    for module, blocks in enumerate(expected.hybrids):
        hybrid = build_on_meta(phase_recipe(cfg, 'incubate', module))
        assert type(hybrid).__name__ == 'IncubationClassifier' and stage_blocks(hybrid) == blocks
    assert num_params(build_on_meta(phase_recipe(cfg, 'e2e'))) == num_params(full)


def assert_trains_the_same(e2e: Config, twin: Config) -> None:
    """The pipeline's E2E phase and its twin config train the same model on the same data with the same recipe."""
    for key in ('model', 'data_preprocessor', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
                'optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr', 'default_hooks', 'custom_hooks',
                'default_scope'):
        assert e2e.get(key) == twin.get(key), key


@pytest.mark.parametrize('name', PIPELINES)
def test_the_e2e_twin_is_the_pipelines_e2e_phase(name: str) -> None:
    pipeline = Config.fromfile(str(CONFIGS / f'incubate_{name}.py'))
    twin = Config.fromfile(str(CONFIGS / f'e2e_{name}.py'))
    assert 'incubation' not in twin and 'runner_type' not in twin  # a plain config: an ordinary Runner trains it
    e2e = phase_recipe(pipeline, 'e2e')
    twin = with_full_layout(twin)
    assert_trains_the_same(e2e, twin)
    def shapes(cfg: Config) -> dict:
        return {key: value.shape for key, value in build_on_meta(cfg).state_dict().items()}

    assert shapes(twin) == shapes(phase_recipe(pipeline, 'finetune'))


@pytest.mark.parametrize('size', ['b', 'l'])
def test_convnext_pipelines_keep_mmpretrains_model_and_recipe_in_every_phase(size: str) -> None:
    """The E2E twin is mmpretrain's config (data root and checkpoints kept aside) in bfloat16; every phase keeps its
    optimizer, batch and EMA, and changes only epochs, drop path and warm-up."""
    stock = Config.fromfile(str(MMPRETRAIN_CONFIGS / 'convnext' / {'b': 'convnext-base_32xb128_in1k.py',
                                                                   'l': 'convnext-large_64xb64_in1k.py'}[size]))
    cfg = Config.fromfile(str(CONFIGS / f'incubate_convnext_{size}.py'))
    twin = Config.fromfile(str(CONFIGS / f'e2e_convnext_{size}.py'))
    # mmpretrain's optimizer wrapper (FP32) with configs/_base_/schedules/bf16.py's precision merged in
    stock.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    for key in ('model', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr', 'custom_hooks',
                'data_preprocessor'):
        assert unscoped(twin[key]) == unscoped(stock[key]), key
    assert unscoped(twin.train_dataloader.dataset.pipeline) == unscoped(stock.train_dataloader.dataset.pipeline)
    assert twin.train_dataloader.batch_size == stock.train_dataloader.batch_size == {'b': 128, 'l': 64}[size]
    warmup, cosine = stock.param_scheduler
    phases = {'meta': (300, 0., [warmup, cosine]), 'incubate': (100, 0.1, [warmup, cosine]),
              'finetune': (100, 0.5, [dict(cosine, begin=0)]), 'e2e': (300, 0.5, [warmup, cosine])}
    for phase, (epochs, drop_path, schedule) in phases.items():
        recipe = phase_recipe(cfg, phase, 0 if phase == 'incubate' else None)
        assert recipe.train_cfg.max_epochs == epochs and recipe.model.backbone.drop_path_rate == drop_path, phase
        assert unscoped(recipe.param_scheduler) == unscoped(schedule), phase
        assert 'end' not in recipe.param_scheduler[-1]  # MMEngine ends the cosine at the phase's max_epochs
        for key in ('optim_wrapper', 'auto_scale_lr', 'custom_hooks'):
            assert unscoped(recipe[key]) == unscoped(stock[key]), (phase, key)


@pytest.mark.parametrize('size', ['base', 'large'])
def test_the_eva02_model_is_mmpretrains_at_224_px_with_the_vit_drop_path(size: str) -> None:
    stock = Config.fromfile(str(MMPRETRAIN_CONFIGS / 'eva02' / f'eva02-{size}-p14_in1k.py')).model
    ours = Config.fromfile(str(CONFIGS / '_base_' / 'models' / f'eva02-{size}-p14_in1k.py')).model
    assert (stock.backbone.img_size, ours.backbone.img_size) == (448, 224)
    assert 'drop_path_rate' not in stock.backbone and ours.backbone.drop_path_rate == {'base': 0.1, 'large': 0.5}[size]
    ours.backbone.img_size = stock.backbone.img_size
    stock.backbone.drop_path_rate = ours.backbone.drop_path_rate
    assert ours == stock


# --- Downstream ---------------------------------------------------------------------------------------------------

DOWNSTREAM = {
    'mask-rcnn_convnext-b-incubated_fpn_amp-ms-crop-3x_coco.py': 'convnext_b',
    'upernet_convnext-b-incubated_8xb2-amp-160k_ade20k-512x512.py': 'convnext_b',
    'upernet_eva02-b-incubated_mln_8xb2-160k_ade20k-512x512.py': 'eva02_b',
}
#: Backbone tensors of the downstream model that the classifier has not (they start fresh), and the other way round.
OWN = {'convnext_b': [f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')], 'eva02_b': []}
UNUSED = {'convnext_b': [], 'eva02_b': ['ln2.bias', 'ln2.weight']}  # EVA-02: the norm of the mean-pooled feature


@pytest.fixture(scope='module')
def products(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The fine-tuned product of each pipeline, as meta tensors (keys and shapes, no data), tagged as the pipeline
    tags it."""
    folder = tmp_path_factory.mktemp('products')
    made = {}
    for name in set(DOWNSTREAM.values()):
        pipeline = Config.fromfile(str(CONFIGS / f'incubate_{name}.py'))
        state = build_on_meta(phase_recipe(pipeline, 'finetune')).state_dict()
        tag = dict(phase='finetune', holds='full', **build_layout(pipeline).tag())
        torch.save(dict(meta={META_KEY: tag}, state_dict=state), folder / f'{name}.pth')
        made[name] = folder / f'{name}.pth', state
    return made


@pytest.mark.parametrize('config', DOWNSTREAM)
def test_downstream_configs_take_every_backbone_tensor_of_the_incubated_product(config: str, products,
                                                                                 monkeypatch) -> None:
    name = DOWNSTREAM[config]
    path, classifier = products[name]
    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    cfg = Config.fromfile(str(CONFIGS / 'downstream' / config))
    assert cfg.runner_type == 'mmincubation.DownstreamRunner'
    # by default the pipeline's own product in this repository's work_dirs/
    assert Path(cfg.model.backbone.init_cfg.checkpoint).resolve() == \
        ROOT / 'work_dirs' / f'incubate_{name}' / 'finetune' / 'finetuned.pth'
    cfg.checkpoint = str(path)
    cfg = resolve_settings(cfg)
    check_pretrained_backbone(cfg)  # what DownstreamRunner checks before anything is built
    backbone = build_on_meta(cfg).backbone.state_dict()
    ours = {key[len('backbone.'):]: value for key, value in classifier.items() if key.startswith('backbone.')}
    assert sorted(set(backbone) - set(ours)) == OWN[name]
    assert sorted(set(ours) - set(backbone)) == UNUSED[name]
    assert all(backbone[key].shape == value.shape for key, value in ours.items() if key in backbone)


def test_the_convnext_b_detector_gives_every_layer_group_a_rate_at_most_the_base_lr() -> None:
    """mmdet's layer-wise decay for ConvNeXt scales a group's lr by ``decay ** (num_layers + 1 - id)``: stage 2's 27
    blocks take ids 3-11 (3 blocks each), stage 3 ``num_layers``, the output norms ``num_layers + 1``. The config's
    12 give every id up to 13 and none beyond; mmdet's ConvNeXt-T value, 6, would scale stage 2's last blocks up."""
    cfg = Config.fromfile(str(CONFIGS / 'downstream' / 'mask-rcnn_convnext-b-incubated_fpn_amp-ms-crop-3x_coco.py'))
    cfg.checkpoint = 'unused.pth'
    model = build_on_meta(resolve_settings(cfg))
    names = [name for name, _ in model.named_parameters() if name.startswith('backbone.')]
    num_layers = cfg.optim_wrapper.paramwise_cfg.num_layers
    assert {get_layer_id_for_convnext(name, num_layers) for name in names} == set(range(num_layers + 2))
    assert max(get_layer_id_for_convnext(name, 6) for name in names if '.stages.2.' in name) == 11 > 6 + 1


def test_only_the_pooled_features_norm_of_an_eva02_product_may_be_left_unused(products, tmp_path, monkeypatch) -> None:
    """The EVA-02 spec names ``ln2`` alone: any other key the segmentation backbone lacks is refused, and without
    the spec's word ``ln2`` is refused too."""
    path, classifier = products['eva02_b']
    cfg = Config.fromfile(str(CONFIGS / 'downstream' / 'upernet_eva02-b-incubated_mln_8xb2-160k_ade20k-512x512.py'))
    cfg.checkpoint = str(tmp_path / 'stray.pth')
    checkpoint = torch.load(path, weights_only=True)
    checkpoint['state_dict']['backbone.ln1.weight'] = checkpoint['state_dict']['backbone.ln2.weight']
    torch.save(checkpoint, tmp_path / 'stray.pth')
    with pytest.raises(CheckpointError, match=r'stray\.pth \(keys backbone\.\*\) does not fit the model: unexpected '
                                              r'keys: ln1\.weight$'):
        check_pretrained_backbone(resolve_settings(copy.deepcopy(cfg)))
    monkeypatch.setattr(EVA02, 'unused_on_load', ())
    cfg.checkpoint = str(path)
    with pytest.raises(CheckpointError, match=r'unexpected keys: ln2\.bias, ln2\.weight$'):
        check_pretrained_backbone(resolve_settings(cfg))


@pytest.mark.parametrize('phase', ['train', 'test'])
def test_the_eva02_upernet_levels_sit_where_their_strides_say(phase: str, monkeypatch) -> None:
    """The ViT UperNets' stride check (tests/test_downstream.py) on the EVA-02 one: 14 px patches, batches padded to
    532 px in training and to multiples of 28 px in the whole-image test, every pyramid level exact."""
    from test_downstream import _coordinate_pyramid, _seg_batches, _seg_level_errors

    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    cfg = Config.fromfile(str(CONFIGS / 'downstream' / 'upernet_eva02-b-incubated_mln_8xb2-160k_ade20k-512x512.py'))
    cfg = resolve_settings(cfg)
    pyramid = _coordinate_pyramid(cfg)
    batches = _seg_batches(cfg, phase)
    assert max(max(_seg_level_errors(cfg, batch, pyramid)) for batch in batches) < 0.01
    assert all(side % 28 == 0 for size, _, _ in batches for side in size)
    assert all(target == size for size, target, _ in batches)
    if phase == 'train':  # 38 x 38 tokens; the backbone's own position grid stays the classifier's 16 x 16
        assert {size for size, _, _ in batches} == {(532, 532)} and cfg.model.backbone.img_size == 224
