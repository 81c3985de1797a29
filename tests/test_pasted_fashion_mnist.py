"""Pasted Fashion-MNIST (issue: Downstream, item 4): exact, reproducible generation; stock mmdet / mmseg loading;
one training iteration + one evaluation of each downstream demo config from a fake demo-backbone checkpoint."""
from __future__ import annotations

import copy
import math
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT, IDX_MD5
from mmincubation.datasets.pasted_fashion_mnist import (
    CLASSES,
    SEG_CLASSES,
    PasteParams,
    load_fashion_mnist,
    make_pasted_fashion_mnist,
    paste_canvas,
    read_manifest,
    render_item,
)
from mmincubation.engine.downstream import resolve_settings
from tools.downstream_demo import CONFIGS, demo_config, run_one, set_max_iters

pytestmark = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed '
                                '(Debian package dataset-fashion-mnist)')

ROOT = Path(__file__).resolve().parents[1]
TINY = PasteParams(num_train=16, num_val=8)
SPLITS = {'training': 'train', 'validation': 'val'}


@pytest.fixture(scope='module')
def sources():
    return {split: load_fashion_mnist(DEBIAN_ROOT, split) for split in SPLITS}


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data') / 'pasted'
    assert make_pasted_fashion_mnist(root, TINY)
    return root


def _coco(root: Path, split: str):
    from pycocotools.coco import COCO
    return COCO(str(root / 'annotations' / f'instances_{SPLITS[split]}.json'))


def _read(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array is not None and array.dtype == np.uint8 and array.ndim == 2, path
    return array


# ----------------------------------------------------------------------------------------------- generation

def test_boxes_masks_and_labels_are_exact(tiny_root, sources):
    from pycocotools import mask as mask_utils
    manifest = read_manifest(tiny_root)
    assert manifest['params'] == TINY.__dict__ and manifest['classes'] == list(CLASSES)
    for split in SPLITS:
        images, labels = sources[split]
        coco = _coco(tiny_root, split)
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        assert coco.getCatIds() == list(range(1, 11))
        assert len(coco.getImgIds()) == TINY.num_images(split) == manifest['counts'][split]['images']
        num_instances = 0
        for index in range(TINY.num_images(split)):
            info = coco.loadImgs(index + 1)[0]
            image = _read(tiny_root / 'images' / split / info['file_name'])
            seg = _read(tiny_root / 'annotations' / split / info['file_name'])
            assert image.shape == seg.shape == (TINY.canvas, TINY.canvas)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=info['id']))
            assert TINY.min_items >= 1 and 1 <= len(anns) <= TINY.max_items
            num_instances += len(anns)
            union = np.zeros(image.shape, bool)
            for ann in anns:
                mask = mask_utils.decode(ann['segmentation']).astype(bool)
                assert not (mask & union).any()  # instances never overlap
                union |= mask
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                assert ann['bbox'] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]  # tight
                assert ann['area'] == mask.sum() and ann['iscrowd'] == 0
                assert (seg[mask] == ann['category_id']).all()  # 1..10: the item's class
            assert np.array_equal(union, image > TINY.threshold)  # mask pixels == foreground pixels
            assert (image[~union] == 0).all() and (seg[~union] == 0).all()

            # The same canvas from the generator: pixels and classes are those of the Fashion-MNIST items.
            canvas, items = paste_canvas(TINY, split, index, images, labels)
            assert np.array_equal(canvas, image)
            assert [item.label + 1 for item in items] == [ann['category_id'] for ann in anns]
            for item, ann in zip(items, anns):
                assert item.label == labels[item.source_index]
                pixels, foreground = render_item(images[item.source_index], item.size, TINY.threshold)
                x, y, w, h = item.bbox
                assert foreground.shape == (h, w) and list(item.bbox) == ann['bbox']
                crop = image[y:y + h, x:x + w]
                assert np.array_equal(crop[foreground], pixels[foreground])
                assert np.array_equal(item.mask[y:y + h, x:x + w], foreground)
        assert num_instances == manifest['counts'][split]['instances']


def test_items_come_from_the_right_split_and_scale(sources):
    images, labels = sources['validation']
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    sizes = []
    for index in range(20):
        _, items = paste_canvas(TINY, 'validation', index, images, labels)
        sizes += [item.size for item in items]
        assert all(item.source_index < 10000 for item in items)
    assert min(sizes) >= round(28 * TINY.min_scale) and max(sizes) <= round(28 * TINY.max_scale)
    assert len(set(sizes)) > 3


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tiny_root, tmp_path):
    assert make_pasted_fashion_mnist(tmp_path / 'again', TINY)
    reference = _files(tiny_root)
    assert _files(tmp_path / 'again') == reference
    assert len(reference) == 2 * (16 + 8) + 2 + 1  # images, label maps, 2 json, manifest

    assert make_pasted_fashion_mnist(tmp_path / 'seed1', replace(TINY, seed=1))
    other = _files(tmp_path / 'seed1')
    assert other.keys() == reference.keys()
    changed = [name for name in reference if name.endswith('.png') and other[name] != reference[name]]
    assert len(changed) == 2 * (16 + 8)  # every image and label map differs

    # An image depends on (seed, split, index) only: a larger data set starts with the same canvases.
    assert make_pasted_fashion_mnist(tmp_path / 'more', replace(TINY, num_train=20))
    more = _files(tmp_path / 'more')
    assert all(more[name] == data for name, data in reference.items() if name.endswith('.png'))


def test_an_existing_data_set_is_kept_replaced_or_refused(tiny_root, tmp_path, monkeypatch):
    root = tmp_path / 'pasted'
    small = replace(TINY, num_train=2, num_val=1)
    assert make_pasted_fashion_mnist(root, small)
    assert not make_pasted_fashion_mnist(root, small)  # complete with these parameters: nothing to do
    with pytest.raises(FileExistsError, match='other parameters'):
        make_pasted_fashion_mnist(root, replace(small, seed=3))
    assert make_pasted_fashion_mnist(root, replace(small, seed=3), force=True)
    assert read_manifest(root)['params']['seed'] == 3

    # An interrupted build leaves no folder behind, and an old incomplete folder is rebuilt.
    import mmincubation.datasets.pasted_fashion_mnist as module
    real = module.write_split

    def failing(tmp, params, split, *args):
        if split == 'validation':
            raise KeyboardInterrupt
        return real(tmp, params, split, *args)

    monkeypatch.setattr(module, 'write_split', failing)
    with pytest.raises(KeyboardInterrupt):
        make_pasted_fashion_mnist(tmp_path / 'interrupted', small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pasted']
    monkeypatch.setattr(module, 'write_split', real)
    (tmp_path / 'half' / 'images' / 'training').mkdir(parents=True)  # no manifest: an older version's interrupted run
    (tmp_path / 'half' / 'images' / 'training' / 'junk.png').write_bytes(b'')
    assert make_pasted_fashion_mnist(tmp_path / 'half', small)
    assert not (tmp_path / 'half' / 'images' / 'training' / 'junk.png').exists() and read_manifest(tmp_path / 'half')


def _tree(root: Path) -> dict[str, object]:
    """Every path under ``root``: the target of a link, the bytes of a file, None for a folder."""
    return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob('*'))}


@pytest.mark.parametrize('case', ['folder of other files', 'same with force', 'the source folder',
                                  'a parent of the source folder', 'a file'])
def test_an_output_that_is_not_a_data_set_is_never_replaced(tmp_path, case):
    from tools.dataset_converters.make_pasted_fashion_mnist import main
    source = tmp_path / 'fashion'  # links to the real files: a wrong replacement would remove only the links
    source.mkdir()
    for name in IDX_MD5:
        (source / f'{name}.gz').symlink_to(Path(DEBIAN_ROOT) / f'{name}.gz')
    (tmp_path / 'work' / 'runs').mkdir(parents=True)
    (tmp_path / 'work' / 'notes.txt').write_text('precious')
    out, message = {
        'folder of other files': (tmp_path / 'work', r'output folder .*work exists and is not a pasted Fashion-MNIST '
                                                     r'data set \(it holds notes\.txt, runs\): replacing it would'),
        'same with force': (tmp_path / 'work', r'output folder .*work exists and is not a pasted Fashion-MNIST'),
        'the source folder': (source, r'output folder .*fashion holds the source files'),
        'a parent of the source folder': (tmp_path, r'output folder .* holds the source files \(.*/fashion\)'),
        'a file': (tmp_path / 'work' / 'notes.txt', r'output .*notes\.txt is a file, expected a folder'),
    }[case]
    before = _tree(tmp_path)
    force = case == 'same with force'
    with pytest.raises(ValueError, match=message):  # a PastedDataError
        make_pasted_fashion_mnist(out, TINY, source_root=source, force=force)
    argv = ['--out', str(out), '--source-root', str(source), '--num-train', '2', '--num-val', '1']
    with pytest.raises(SystemExit, match='^error: ' + message):
        main(argv + (['--force'] if force else []))
    assert _tree(tmp_path) == before


@pytest.mark.parametrize('case, message', [
    ('truncated', r'.*/train-images-idx3-ubyte\.gz is not a complete gzip file \(EOFError'),
    ('text', r'.*/train-images-idx3-ubyte\.gz is not a complete gzip file \(BadGzipFile'),
    ('source root is a file', r'source root .*notes\.txt is a file, expected the folder of the Fashion-MNIST IDX'),
    ('bad parameters', r'canvas 8 is smaller than the largest item'),
])
def test_bad_sources_and_parameters_exit_in_one_line(tmp_path, case, message):
    from tools.dataset_converters.make_pasted_fashion_mnist import main
    source = tmp_path / 'source'
    source.mkdir()
    for name in IDX_MD5:
        data = (Path(DEBIAN_ROOT) / f'{name}.gz').read_bytes()
        data = data[:100] if case == 'truncated' else b'text\n' if case == 'text' else data
        (source / f'{name}.gz').write_bytes(data)
    (tmp_path / 'notes.txt').write_text('not a folder')
    argv = ['--out', str(tmp_path / 'out'), '--num-train', '2', '--num-val', '1',
            '--source-root', str(tmp_path / 'notes.txt' if case == 'source root is a file' else source)]
    with pytest.raises(SystemExit, match='^error: ' + message):
        main(argv + (['--canvas', '8'] if case == 'bad parameters' else []))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt', 'source']


def test_cli_is_idempotent(tmp_path, capsys):
    from tools.dataset_converters.make_pasted_fashion_mnist import main
    argv = ['--out', str(tmp_path / 'd'), '--num-train', '2', '--num-val', '1', '--seed', '5']
    assert main(argv) is True
    assert main(argv) is False
    assert 'nothing to do' in capsys.readouterr().out
    assert read_manifest(tmp_path / 'd')['params'] == replace(PasteParams(), num_train=2, num_val=1, seed=5).__dict__


# ----------------------------------------------------------------------------------------------- stock loaders

def test_stock_mmdet_coco_dataset_reads_it(tiny_root):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = demo_config('det', 'unused.pth', 'unused', data_root=tiny_root)
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'  # stock class, classes from metainfo
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    coco = _coco(tiny_root, 'training')
    assert len(dataset) == 16 and dataset.metainfo['classes'] == CLASSES
    for index in (0, 5):
        sample = dataset[index]
        assert tuple(sample['inputs'].shape) == (1, TINY.canvas, TINY.canvas)  # grayscale: one channel
        info = dataset.get_data_info(index)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info['img_id']))
        gt = sample['data_samples'].gt_instances
        flipped = sample['data_samples'].metainfo['flip']
        masks = [coco.annToMask(ann).astype(bool) for ann in anns]
        if flipped:
            masks = [m[:, ::-1] for m in masks]
        assert gt.labels.tolist() == [ann['category_id'] - 1 for ann in anns]
        assert np.array_equal(gt.masks.to_ndarray().astype(bool), np.stack(masks))
        image = _read(tiny_root / 'images' / 'training' / Path(info['img_path']).name)
        expected = image[:, ::-1] if flipped else image
        assert np.array_equal(sample['inputs'][0].numpy(), expected)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(val) == 8 and 'scale_factor' in val[0]['data_samples'].metainfo


def test_stock_mmseg_dataset_reads_it(tiny_root):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = demo_config('seg', 'unused.pth', 'unused', data_root=tiny_root)
    assert cfg.val_dataloader.dataset.type == 'BaseSegDataset' and not cfg.val_dataloader.dataset.reduce_zero_label
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(dataset) == 8 and dataset.metainfo['classes'] == SEG_CLASSES
    assert len(dataset.metainfo['palette']) == len(SEG_CLASSES)  # drawing colours only: mmseg's when not configured
    sample = dataset[3]
    assert tuple(sample['inputs'].shape) == (1, TINY.canvas, TINY.canvas)
    seg = sample['data_samples'].gt_sem_seg.data
    assert tuple(seg.shape) == (1, TINY.canvas, TINY.canvas)
    assert np.array_equal(seg[0].numpy(), _read(tiny_root / 'annotations' / 'validation' / '000003.png'))
    assert np.array_equal(sample['inputs'][0].numpy(), _read(tiny_root / 'images' / 'validation' / '000003.png'))


# ----------------------------------------------------------------------------------------------- demo configs

def test_demo_configs_fit_the_data_and_the_demo_backbone(monkeypatch):
    monkeypatch.delenv('INCUBATED_CHECKPOINT', raising=False)
    upstream = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'models' / 'vit-tiny-p4_fashion-mnist.py'))
    for task, path in CONFIGS.items():
        cfg = resolve_settings(Config.fromfile(str(path)))
        assert cfg.image_size == PasteParams().canvas and cfg.data_root == 'data/pasted_fashion_mnist/'
        backbone = cfg.model.backbone
        assert backbone.type == 'mmincubation.InflatingVisionTransformer' and backbone.out_type == 'featmap'
        assert dict(backbone.arch) == dict(upstream.model.backbone.arch)
        assert (backbone.patch_size, backbone.in_channels) == (4, 1)
        assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
        assert Path(backbone.init_cfg.checkpoint).resolve() == \
            ROOT / 'work_dirs' / 'incubate_demo_fashion_mnist' / 'finetune' / 'finetuned.pth'
        preprocessor = cfg.model.data_preprocessor
        assert preprocessor.mean == [72.94] and preprocessor.std == [90.02] and preprocessor.bgr_to_rgb is False
        assert cfg.optim_wrapper.constructor == 'mmincubation.LayerDecayOptimWrapperConstructor'
        assert cfg.optim_wrapper.paramwise_cfg.num_layers == 8
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert all(p.end == cfg.train_cfg.max_iters for p in cfg.param_scheduler[1:])
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            assert loader.dataset.pipeline[0] == dict(type='LoadImageFromFile', color_type='grayscale',
                                                      **({'backend_args': None} if task == 'det' else {}))
        if task == 'det':
            assert cfg.default_scope == 'mmdet' and tuple(cfg.classes) == CLASSES
            assert cfg.model.neck.type == 'mmincubation.SimpleFPN'
            assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
        else:
            assert cfg.default_scope == 'mmseg' and tuple(cfg.classes) == SEG_CLASSES
            assert cfg.model.decode_head.num_classes == 11 and cfg.val_evaluator.type == 'IoUMetric'
    monkeypatch.setenv('INCUBATED_CHECKPOINT', 'work_dirs/incubate_demo_fashion_mnist/e2e/e2e.pth')
    for path in CONFIGS.values():
        assert resolve_settings(Config.fromfile(str(path))).model.backbone.init_cfg.checkpoint.endswith('e2e/e2e.pth')


def test_set_max_iters_moves_the_schedule():
    cfg = resolve_settings(Config.fromfile(str(CONFIGS['det'])))
    warmup = cfg.param_scheduler[0].end
    assert [(p.begin, p.end) for p in cfg.param_scheduler] == [(0, warmup), (warmup, cfg.max_iters)]
    doubled = set_max_iters(copy.deepcopy(cfg), 2 * cfg.max_iters)
    assert doubled.train_cfg.max_iters == doubled.train_cfg.val_interval == doubled.default_hooks.checkpoint.interval
    assert [(p.begin, p.end) for p in doubled.param_scheduler] == [(0, 2 * warmup), (2 * warmup, 2 * cfg.max_iters)]
    tiny = set_max_iters(copy.deepcopy(cfg), 1)  # the warm-up shrinks to nothing and goes
    assert [(p.type, p.begin, p.end) for p in tiny.param_scheduler] == [('CosineAnnealingLR', 0, 1)]


@pytest.fixture(scope='module')
def fake_checkpoint(tmp_path_factory) -> Path:
    """A demo classifier (mmpretrain ImageClassifier, configs/_base_/models/vit-tiny-p4_fashion-mnist.py) with
    random weights unlike any fresh initialisation."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'models' / 'vit-tiny-p4_fashion-mnist.py'))
    torch.manual_seed(3)
    classifier = MODELS.build(cfg.model)
    classifier.init_weights()
    with torch.no_grad():
        for param in classifier.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    path = tmp_path_factory.mktemp('ckpt') / 'classifier.pth'
    torch.save(dict(meta=dict(mmincubation=dict(phase='finetune')), state_dict=classifier.state_dict()), path)
    return path


def _demo_argv(tmp_path: Path, data_root: Path, incubated: Path, e2e: Path) -> list[str]:
    return ['--data-root', str(data_root), '--work-dir', str(tmp_path / 'runs'), '--num-train', '2', '--num-val', '1',
            '--tasks', 'seg', '--max-iters', '1', '--quiet', '--incubated', str(incubated), '--e2e', str(e2e)]


def test_downstream_demo_refuses_a_backbone_that_does_not_fit_before_building_data(fake_checkpoint, tmp_path):
    from tools.downstream_demo import main
    checkpoint = torch.load(fake_checkpoint, weights_only=True)
    module = tmp_path / 'module_1.pth'
    torch.save(dict(meta=dict(mmincubation=dict(phase='incubate', layout=[2, 2, 2, 2], module=1)),
                    state_dict=checkpoint['state_dict']), module)
    with pytest.raises(SystemExit, match=r'^error: checkpoint .*module_1\.pth holds a single incubated module'):
        main(_demo_argv(tmp_path, tmp_path / 'data', fake_checkpoint, module))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['module_1.pth']  # no data set, no runs


def test_downstream_demo_never_builds_its_data_over_the_checkpoints(fake_checkpoint, tmp_path):
    from tools.downstream_demo import main
    folder = tmp_path / 'checkpoints'
    folder.mkdir()
    (folder / 'classifier.pth').write_bytes(fake_checkpoint.read_bytes())
    before = _tree(tmp_path)
    with pytest.raises(SystemExit, match=r'^error: output folder .*checkpoints exists and is not a pasted '
                                         r'Fashion-MNIST data set \(it holds classifier\.pth\)'):
        main(_demo_argv(tmp_path, folder, folder / 'classifier.pth', folder / 'classifier.pth'))
    assert _tree(tmp_path) == before


class _BackboneAtStart(Hook):
    """Keeps a copy of the backbone's weights when training starts (after ``init_weights``)."""

    def before_train(self, runner) -> None:
        self.state = {k: v.detach().clone() for k, v in runner.model.backbone.state_dict().items()}


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_one_iteration_and_one_evaluation(task, tiny_root, fake_checkpoint, tmp_path):
    from mmpretrain.models.utils import resize_pos_embed
    cfg = demo_config(task, fake_checkpoint, tmp_path / 'work', data_root=tiny_root, max_iters=1)
    hook = _BackboneAtStart()
    record = run_one(cfg, hooks=[hook])
    assert not record['cached'] and record['max_iters'] == 1
    keys = ('coco/bbox_mAP', 'coco/segm_mAP') if task == 'det' else ('mIoU', 'aAcc')
    for key in keys:
        assert isinstance(record['metrics'][key], float) and math.isfinite(record['metrics'][key]), record
    assert (tmp_path / 'work' / 'metrics.json').is_file()

    # the backbone started from exactly the checkpoint's weights (pos_embed resized 7x7 -> canvas/4)
    source = torch.load(fake_checkpoint, weights_only=True)['state_dict']
    expected = {k[len('backbone.'):]: v for k, v in source.items() if k.startswith('backbone.')}
    assert set(hook.state) == set(expected)
    grid = TINY.canvas // 4
    expected['pos_embed'] = resize_pos_embed(expected['pos_embed'], (7, 7), (grid, grid), 'bicubic', 1)
    for key, value in expected.items():
        torch.testing.assert_close(hook.state[key], value, rtol=0, atol=0, msg=key)

    # a rerun with the same config, checkpoint and data reuses the record
    again = run_one(demo_config(task, fake_checkpoint, tmp_path / 'work', data_root=tiny_root, max_iters=1))
    assert again['cached'] and again['metrics'] == record['metrics']


def test_the_demo_detector_pools_roi_features_from_contiguous_maps():
    """mmcv's RoIAlign kernels (CPU and CUDA) index their input as contiguous NCHW memory and do not check it.

    With permuted maps every RoI feature is scrambled: the demo's Mask R-CNN then reached 2 bbox AP instead of 44.
    """
    from mmcv.ops import roi_align
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = resolve_settings(Config.fromfile(str(CONFIGS['det'])))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    feats = model.extract_feat(torch.randn(1, 1, TINY.canvas, TINY.canvas))
    rois = torch.tensor([[0., 3., 5., 40., 33.]])
    for feat in feats:
        torch.testing.assert_close(roi_align(feat, rois, 7, 0.25, 0, 'avg', True),
                                   roi_align(feat.contiguous(), rois, 7, 0.25, 0, 'avg', True))
        assert feat.is_contiguous()
