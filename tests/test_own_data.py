"""Downstream on one's own data (issue 14): box-only data, a forgotten num_classes, settings that reach every field,
a checkpoint found from any working directory, RGB images on the grey demo backbone, OpenMP waiting, and the
worked example of docs/user_guides/own_data.md (deepforest's tree photos -> COCO -> Faster R-CNN -> test) at
tiny size; the tools that write data sets or runs never replace a user's files (case
deepforest-converter-overwrites-user-files).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmincubation.checkpoint import CheckpointError
from mmincubation.engine.downstream import SettingError, resolve_settings
from mmincubation.engine.runner.fit_checks import check_pretrained_backbone
from mmincubation.models.channel_inflation import PATCH_WEIGHT, inflate_channels

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / 'configs' / 'downstream'
DEMO_DET = DOWNSTREAM / 'demo' / 'mask-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-fashion-mnist.py'
DEMO_BOX = DOWNSTREAM / 'demo' / 'faster-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-fashion-mnist.py'
DEMO_SEG = DOWNSTREAM / 'demo' / 'upernet_vit-tiny-p4-incubated_pasted-fashion-mnist.py'
EXAMPLE = DOWNSTREAM / 'examples' / 'faster-rcnn_vit-tiny-p4-incubated_simplefpn_deepforest-trees.py'

try:
    distribution('deepforest')
    HAVE_DEEPFOREST = True
except PackageNotFoundError:
    HAVE_DEEPFOREST = False
needs_deepforest = pytest.mark.skipif(not HAVE_DEEPFOREST, reason="deepforest's data not installed (tools/install.sh)")


def child(tmp_path: Path, base: Path, text: str) -> Config:
    """A user's config inheriting ``base`` with ``text``, read and its settings filled in as the runner does."""
    path = tmp_path / 'my_config.py'
    path.write_text(f'_base_ = {str(base)!r}\n{text}')
    return resolve_settings(Config.fromfile(str(path)))


def transforms(cfg: Config, kind: str) -> list:
    return [t for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
            for t in cfg[loader].dataset.pipeline if t.type == kind]


# ----------------------------------------------------------------------------------------------- 3: settings

DET_CONFIGS = [DEMO_DET, DEMO_BOX, DOWNSTREAM / 'mask-rcnn_vit-b-incubated_simplefpn_1x_coco.py',
               DOWNSTREAM / 'faster-rcnn_vit-h-incubated_simplefpn_3x_coco.py']
SEG_CONFIGS = [DEMO_SEG, DOWNSTREAM / 'upernet_vit-l-incubated_mln_8xb2-80k_ade20k-512x512.py']


@pytest.mark.parametrize('base', DET_CONFIGS + SEG_CONFIGS, ids=lambda p: p.stem)
def test_a_child_config_sets_each_setting_in_one_place(base, tmp_path):
    classes = ('bg', 'cat', 'dog')
    cfg = child(tmp_path, base, f"checkpoint = '/ckpt/mine.pth'\nclasses = {classes!r}\nimage_size = 96\n"
                                "data_root = '/data/mine/'\n")
    model = cfg.model
    assert model.backbone.init_cfg.checkpoint == '/ckpt/mine.pth'
    assert tuple(model.backbone.img_size) == (96, 96)
    assert all(tuple(t.crop_size) == (96, 96) for t in transforms(cfg, 'RandomCrop'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/data/mine/'
        assert tuple(cfg[loader].dataset.metainfo.classes) == classes
    if base in SEG_CONFIGS:
        assert tuple(model.data_preprocessor.size) == (96, 96)
        assert model.decode_head.num_classes == model.auxiliary_head.num_classes == 3
        return
    resizes = transforms(cfg, 'Resize') + transforms(cfg, 'RandomResize')
    assert resizes and all(tuple(t.scale) == (96, 96) for t in resizes)
    for aug in model.data_preprocessor.get('batch_augments') or []:
        assert tuple(aug.size) == (96, 96)
    heads = [model.roi_head.bbox_head] + ([model.roi_head.mask_head] if model.roi_head.mask_head else [])
    assert [head.num_classes for head in heads] == [3] * len(heads)
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert evaluator.ann_file.startswith('/data/mine/annotations/')
    assert '${' not in cfg.pretty_text


def test_settings_from_the_command_line_reach_every_field_and_typos_are_named(tmp_path):
    cfg = Config.fromfile(str(DEMO_BOX))
    cfg.merge_from_dict({'image_size': 80, 'classes': ['a'], 'max_iters': 7})  # as --cfg-options does
    resolve_settings(cfg)
    assert tuple(cfg.model.backbone.img_size) == (80, 80) and cfg.model.roi_head.bbox_head.num_classes == 1
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == cfg.param_scheduler[-1].end == 7
    with pytest.raises(SettingError, match=r'^model.backbone.img_size\[0\]: "\$\{image_sise\}" names no setting'):
        child(tmp_path, DEMO_BOX, "model = dict(backbone=dict(img_size=('${image_sise}', 1)))\n")
    with pytest.raises(SettingError, match=r"^setting classes = 'Tree': needs a non-empty tuple .* \(one name needs a "
                                           r"comma: \('Tree', \)\)$"):
        child(tmp_path, DEMO_BOX, "classes = ('Tree')\n")


# ----------------------------------------------------------------------------------------------- 4: checkpoint path

def test_the_default_checkpoint_is_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    monkeypatch.chdir(tmp_path)
    for path, upstream in ((DEMO_BOX, 'incubate_demo_fashion_mnist'),
                           (DOWNSTREAM / 'upernet_vit-h-incubated_mln_8xb2-160k_ade20k-512x512.py', 'incubate_vit_h')):
        checkpoint = resolve_settings(Config.fromfile(str(path))).model.backbone.init_cfg.checkpoint
        assert Path(checkpoint).resolve() == ROOT / 'work_dirs' / upstream / 'finetune' / 'finetuned.pth'
    cfg = child(tmp_path, DEMO_BOX, "checkpoint = 'nowhere/vit.pth'\n")
    with pytest.raises(CheckpointError, match=r'^model.backbone.init_cfg.checkpoint nowhere/vit.pth does not exist '
                                              r'\(relative to the working directory .*\); set INCUBATED_CHECKPOINT='
                                              r'.* or --cfg-options checkpoint='):
        check_pretrained_backbone(cfg)


# ----------------------------------------------------------------------------------------------- 5: channels

@pytest.fixture(scope='module')
def grey_checkpoint(tmp_path_factory) -> Path:
    """A 1-channel demo-shaped ViT classifier (random, distinctive weights) as `make demo` writes it."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'models' / 'vit-tiny-p4_fashion-mnist.py'))
    torch.manual_seed(5)
    classifier = MODELS.build(cfg.model)
    with torch.no_grad():
        for param in classifier.parameters():
            param.normal_()
    path = tmp_path_factory.mktemp('ckpt') / 'grey.pth'
    torch.save(dict(meta=dict(mmincubation=dict(phase='finetune')), state_dict=classifier.state_dict()), path)
    return path


def _backbone(cfg: Config) -> torch.nn.Module:
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    backbone.eval()
    return backbone


def test_rgb_images_get_the_grey_patch_embedding_inflated(grey_checkpoint, tmp_path):
    settings = f"checkpoint = {str(grey_checkpoint)!r}\nimage_size = 32\n"
    grey = child(tmp_path, DEMO_BOX, settings)
    rgb = child(tmp_path, DEMO_BOX, settings + "in_channels = 3\ncolor_type = 'color'\n")
    check_pretrained_backbone(rgb)
    grey_backbone, rgb_backbone = _backbone(grey), _backbone(rgb)
    source = torch.load(grey_checkpoint, weights_only=True)['state_dict']['backbone.' + PATCH_WEIGHT]
    loaded = rgb_backbone.state_dict()[PATCH_WEIGHT]
    assert loaded.shape[1] == 3
    torch.testing.assert_close(loaded, source.repeat(1, 3, 1, 1) / 3, rtol=0, atol=0)
    # a grey photo (three equal channels) gives the features the grey backbone gives the grey image
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rgb_backbone(image.expand(1, 3, 32, 32))[0], grey_backbone(image)[0],
                                   rtol=1e-4, atol=1e-4)
    # and back: an RGB kernel sums into one channel
    torch.testing.assert_close(inflate_channels(loaded, 1), source, rtol=1e-6, atol=1e-6)


def test_channels_that_cannot_be_inflated_are_refused_never_left_random(grey_checkpoint, tmp_path):
    settings = f"checkpoint = {str(grey_checkpoint)!r}\nimage_size = 32\n"
    plain = child(tmp_path, DEMO_BOX, settings + "in_channels = 3\nmodel = dict(backbone=dict("
                                                 "type='mmpretrain.VisionTransformer'))\n")
    with pytest.raises(CheckpointError, match=r'grey.pth: the patch embedding \(patch_embed.projection.weight\) '
                                              r'takes 1 image channels, the backbone 3 .*InflatingVisionTransformer'):
        check_pretrained_backbone(plain)
    with pytest.raises(ValueError, match=r'patch_embed.projection.weight of shape \(64, 3, 4, 4\) takes 3 image '
                                         r'channels, the backbone 4'):
        inflate_channels(torch.zeros(64, 3, 4, 4), 4)


# ----------------------------------------------------------------------------------------------- 2: num_classes

def test_a_segmentor_whose_num_classes_misses_the_classes_is_stopped_by_the_check_hook():
    from mmdet.engine.hooks import NumClassCheckHook
    from mmseg.registry import MODELS
    cfg = resolve_settings(Config.fromfile(str(DEMO_SEG)))
    assert [h.type for h in cfg.custom_hooks] == ['mmdet.NumClassCheckHook']
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    cfg.model.decode_head.num_classes = 5  # forgotten, classes has 11
    model = MODELS.build(cfg.model)
    runner = SimpleNamespace(model=model, train_dataloader=SimpleNamespace(
        dataset=SimpleNamespace(metainfo=dict(classes=cfg.classes))))
    with pytest.raises(AssertionError, match=r"`num_classes` \(5\) in EncoderDecoder .* the length of `classes` 11\)"):
        NumClassCheckHook().before_train_epoch(runner)


# ----------------------------------------------------------------------------------------------- 6: OpenMP

@pytest.mark.parametrize('given, expected', [(None, 'PASSIVE'), ('ACTIVE', 'ACTIVE')])
def test_train_tool_sets_passive_openmp_waiting_before_torch_is_imported(given, expected):
    probe = ("import os, sys\nseen = []\nclass Probe:\n    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch' and not seen: seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
             "sys.meta_path.insert(0, Probe())\nimport tools.train\nprint(seen[0])\n")
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if given:
        env['OMP_WAIT_POLICY'] = given
    out = subprocess.run([sys.executable, '-c', probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == expected


# ------------------------------------------------------------------------------------- 1 + the guide's worked example

@pytest.fixture(scope='module')
def trees(tmp_path_factory) -> Path:
    from tools.dataset_converters.deepforest_to_coco import convert
    root = tmp_path_factory.mktemp('deepforest_trees')
    assert convert(root) == dict(train=(54, 844), val=(2, 98))
    return root


@needs_deepforest
def test_the_tree_photos_are_a_box_only_coco_set(trees):
    from mmdet.datasets import CocoDataset
    for split, images in (('train', 54), ('val', 2)):
        coco = json.loads((trees / 'annotations' / f'instances_{split}.json').read_text())
        assert len(coco['images']) == images and coco['categories'] == [dict(id=1, name='Tree')]
        assert all('segmentation' not in a and a['bbox'][2] > 0 and a['bbox'][3] > 0 for a in coco['annotations'])
    init_default_scope('mmdet')
    dataset = CocoDataset(data_root=str(trees), ann_file='annotations/instances_val.json',
                          data_prefix=dict(img='images/validation/'), metainfo=dict(classes=('Tree', )),
                          pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)])
    sample = dataset[0]
    assert sample['img'].shape == (400, 400, 3) and len(sample['gt_bboxes']) in (61, 37)


def _example_argv(trees: Path, checkpoint: Path, work_dir: Path, *options: str) -> list[str]:
    return [str(EXAMPLE), '--work-dir', str(work_dir), '--cfg-options', f'data_root={trees}/',
            f'checkpoint={checkpoint}', 'image_size=64', 'warmup_iters=1', 'max_iters=2', 'log_level=WARNING', *options]


@needs_deepforest
def test_the_readme_example_trains_and_tests_at_tiny_size(trees, grey_checkpoint, tmp_path):
    """The own-data guide's commands, tiny: RGB tree photos, boxes only, 1 class, from the grey demo backbone."""
    from tools.test import main as test
    from tools.train import main as train
    train(_example_argv(trees, grey_checkpoint, tmp_path / 'work'))
    checkpoint = tmp_path / 'work' / 'iter_2.pth'
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    assert state['backbone.' + PATCH_WEIGHT].shape[1] == 3 and state['roi_head.bbox_head.fc_cls.weight'].shape[0] == 2
    metrics = test([str(EXAMPLE), str(checkpoint), '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                    f'data_root={trees}/', f'checkpoint={grey_checkpoint}', 'image_size=64', 'log_level=WARNING'])
    assert 0 <= metrics['coco/bbox_mAP'] <= 1


@needs_deepforest
def test_a_detector_whose_num_classes_misses_the_classes_stops_before_the_first_iteration(trees, grey_checkpoint,
                                                                                           tmp_path):
    from tools.train import main as train
    with pytest.raises(AssertionError, match=r'`num_classes` \(10\) in Shared2FCBBoxHead .* `classes` 1\)'):
        train(_example_argv(trees, grey_checkpoint, tmp_path / 'work', 'model.roi_head.bbox_head.num_classes=10'))
    assert not list((tmp_path / 'work').glob('iter_*.pth'))


def test_a_checkpoint_of_another_patch_size_is_refused_not_left_random(grey_checkpoint, tmp_path):
    """Only the channels of the patch embedding may differ: a patch-7 kernel for the patch-4 backbone is refused."""
    state = torch.load(grey_checkpoint, weights_only=True)
    state['state_dict']['backbone.' + PATCH_WEIGHT] = torch.zeros(64, 1, 7, 7)
    torch.save(state, tmp_path / 'patch7.pth')
    cfg = child(tmp_path, DEMO_BOX, f"checkpoint = {str(tmp_path / 'patch7.pth')!r}\nimage_size = 32\n")
    with pytest.raises(CheckpointError, match=r'patch7.pth: the patch embedding \(patch_embed.projection.weight\) has '
                                              r'shape \(64, 1, 7, 7\), the backbone \(64, 1, 4, 4\): another width or '
                                              r'patch size'):
        check_pretrained_backbone(cfg)


@needs_deepforest
def test_classes_that_are_not_the_tree_categories_stop_before_the_first_iteration(trees, grey_checkpoint, tmp_path):
    from tools.train import main as train
    with pytest.raises(SystemExit, match=rf"^error: {trees}/annotations/instances_train.json: the categories of this "
                                         r"annotation file are not the setting classes \(train_dataloader.dataset."
                                         r"metainfo.classes\): not in the file: 'Bush'$"):
        train(_example_argv(trees, grey_checkpoint, tmp_path / 'work', 'classes=(Tree,Bush)'))
    assert not (tmp_path / 'work').exists()


# ----------------------------------------------------------------------------------------------- users' folders

CONVERTER = ROOT / 'tools' / 'dataset_converters' / 'deepforest_to_coco.py'


def user_coco_set(root: Path) -> dict[str, str]:
    """A user's own small COCO set, as the case's setup_user_folder.sh makes it; returns ``{path: md5}`` of it."""
    import cv2
    import numpy as np
    (root / 'annotations').mkdir(parents=True)
    coco = dict(images=[dict(id=1, file_name='my_photo.png', width=10, height=10)], annotations=[],
                categories=[dict(id=1, name='Car')])
    for split in ('train', 'val'):
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    for folder, name, grey in (('training', 'my_photo.png', 7), ('validation', 'OSBS_029.png', 9)):
        (root / 'images' / folder).mkdir(parents=True)
        cv2.imwrite(str(root / 'images' / folder / name), np.full((10, 10, 3), grey, np.uint8))
    return md5s(root)


def md5s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*'))
            if p.is_file()}


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_converter_refuses_a_folder_of_the_users_files_and_writes_nothing(tmp_path):
    user = tmp_path / 'user_ds'
    before = user_coco_set(user)
    out = run_tool(str(CONVERTER), str(user))
    assert out.returncode == 1 and out.stdout == ''
    assert out.stderr.splitlines()[-1] == (f'error: output folder {user} holds files this converter did not write '
                                           '(first: annotations/instances_train.json): nothing was written; choose '
                                           'a new or empty folder')
    assert md5s(user) == before


@pytest.mark.parametrize('tile', ['-1', '0'])
def test_the_converter_refuses_a_tile_below_one_px_before_writing(tile, tmp_path):
    out = run_tool(str(CONVERTER), str(tmp_path / 'trees'), '--tile', tile)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == f'deepforest_to_coco.py: error: argument --tile: must be a positive ' \
                                          f'number of px, got {tile}'
    assert list(tmp_path.iterdir()) == []
    from tools.dataset_converters.deepforest_to_coco import convert
    with pytest.raises(ValueError, match=f'^tile must be a positive int \\(px\\) or None, got {tile}$'):
        convert(tmp_path / 'trees', int(tile))
    assert list(tmp_path.iterdir()) == []


@needs_deepforest
def test_the_converter_reruns_over_its_own_output_only_as_it_wrote_it(trees, tmp_path, capsys):
    from tools.dataset_converters.deepforest_to_coco import MANIFEST, main
    out = tmp_path / 'trees'
    assert main([str(out), '--tile', '800']) == dict(train=(16, 851), val=(2, 98))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest['tile'] == 800 and sorted(manifest['files']) == sorted(md5s(out).keys() - {MANIFEST})
    capsys.readouterr()
    assert main([str(out)]) == dict(train=(54, 844), val=(2, 98))  # the 800 px tiles are gone
    assert capsys.readouterr().out.startswith(f"{out}: replaced this converter's earlier output")
    assert md5s(out) == md5s(trees)  # the same as a first run into a new folder
    changed = out / 'images' / 'validation' / 'OSBS_029.png'
    changed.write_bytes(changed.read_bytes() + b'edited')
    for extra in (None, out / 'images' / 'training' / 'a_mine.png'):
        if extra:
            changed.write_bytes((trees / 'images' / 'validation' / 'OSBS_029.png').read_bytes())
            extra.write_bytes(b'mine')
        before = md5s(out)
        first = 'images/validation/OSBS_029.png' if extra is None else 'images/training/a_mine.png'
        with pytest.raises(SystemExit, match=f'^error: output folder {out} holds files this converter did not write '
                                             f'\\(first: {first}\\)'):
            main([str(out)])
        assert md5s(out) == before


def test_the_pasted_data_tool_refuses_a_users_coco_set_and_out_of_range_arguments(tmp_path, capsys):
    from tools.dataset_converters.make_pasted_fashion_mnist import main
    user = tmp_path / 'user_ds'
    before = user_coco_set(user)
    with pytest.raises(SystemExit, match=f'^error: output folder {user} holds files but no manifest.json \\(first: '
                                         r'annotations/instances_train.json\): it is no pasted Fashion-MNIST'):
        main(['--out', str(user), '--num-train', '2', '--num-val', '1'])
    assert md5s(user) == before
    for argument, value, needs in (('--seed', '-1', '>= 0, got -1'), ('--gap', '-5', '>= 0, got -5'),
                                   ('--num-val', '0', '>= 1, got 0'), ('--min-scale', '0', '> 0, got 0.0')):
        with pytest.raises(SystemExit) as error:
            main(['--out', str(tmp_path / 'out'), argument, value])
        assert error.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(f': error: argument {argument}: must be {needs}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['user_ds']


def test_the_downstream_demo_refuses_a_users_folders_and_out_of_range_arguments(tmp_path, capsys):
    from tools.downstream_demo import main
    user = tmp_path / 'user_ds'
    before = user_coco_set(user)
    (tmp_path / 'ckpt.pth').write_bytes(b'')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'results.json').write_text('{"mine": 1}')
    argv = ['--incubated', str(tmp_path / 'ckpt.pth'), '--e2e', str(tmp_path / 'ckpt.pth')]
    with pytest.raises(SystemExit, match=f'^error: --work-dir {work} holds files the downstream demo did not write '
                                         r'\(first: results.json\): nothing was written'):
        main(argv + ['--work-dir', str(work), '--data-root', str(tmp_path / 'data')])
    with pytest.raises(SystemExit, match=f'^error: --data-root {user} holds files but no manifest.json \\(first: '
                                         r'annotations/instances_train.json\)'):
        main(argv + ['--work-dir', str(tmp_path / 'runs'), '--data-root', str(user)])
    assert md5s(user) == before and (work / 'results.json').read_text() == '{"mine": 1}'
    for argument, value, needs in (('--max-iters', '0', '>= 1'), ('--train-seed', '-1', '>= 0'),
                                   ('--num-train', '0', '>= 1')):
        with pytest.raises(SystemExit) as error:
            main(argv + [argument, value])
        assert error.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(f': error: argument {argument}: must be {needs}, '
                                                                 f'got {value}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pth', 'user_ds', 'work']
