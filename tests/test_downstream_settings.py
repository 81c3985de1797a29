"""Downstream settings of the wrong type or range stop in one line naming the setting, before anything is built
(case downstream-setting-types-tracebacks), and classes that are not the COCO file's categories stop before the
first iteration, naming the file and the difference.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from mmincubation.engine.downstream import (
    SETTINGS,
    SettingError,
    check_classes_match_annotations,
    coco_category_names,
    resolve_settings,
)

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / 'configs' / 'downstream'
EXAMPLE = DOWNSTREAM / 'examples' / 'faster-rcnn_vit-tiny-p4-incubated_simplefpn_deepforest-trees.py'
DEMO_SEG = DOWNSTREAM / 'demo' / 'upernet_vit-tiny-p4-incubated_pasted-fashion-mnist.py'
ADE_B = DOWNSTREAM / 'upernet_vit-b-incubated_mln_8xb2-160k_ade20k-512x512.py'

#: setting -> [(wrong value as config text, start of the one-line message)]: the case's variants and the other rows
WRONG = {
    'image_size': [("'128'", "setting image_size = '128': needs a positive int, px"),
                   ('(128, 96)', 'setting image_size = (128, 96): needs a positive int, px: the side of the square '
                                 'input (an (h, w) pair is not supported'),
                   ('128.0', 'setting image_size = 128.0: needs a positive int'),
                   ('0', 'setting image_size = 0: needs a positive int')],
    'in_channels': [("'3'", "setting in_channels = '3': needs the int 1 (grey images) or 3 (RGB)"),
                    ('2', 'setting in_channels = 2: needs the int 1')],
    'max_iters': [("'2'", "setting max_iters = '2': needs a positive int (training iterations)"),
                  ('-1', 'setting max_iters = -1: needs a positive int')],
    'warmup_iters': [('1.5', 'setting warmup_iters = 1.5: needs a positive int')],
    'checkpoint': [('None', 'setting checkpoint = None: needs a non-empty path string'),
                   ("''", "setting checkpoint = '': needs a non-empty path string")],
    'classes': [('()', 'setting classes = (): needs a non-empty tuple or list of distinct, non-empty class-name'),
                ("('Tree', '')", "setting classes = ('Tree', ''): needs"),
                ("('Tree', 'Tree')", "setting classes = ('Tree', 'Tree'): needs")],
    'data_root': [('None', 'setting data_root = None: needs a non-empty folder path string'),
                  ("''", "setting data_root = '': needs a non-empty folder path string")],
    'color_type': [("'rgb'", "setting color_type = 'rgb': needs one of 'color', 'grayscale'")],
    'mean': [("'72'", "setting mean = '72': needs a non-empty list of numbers")],
    'std': [('[0.0]', 'setting std = [0.0]: needs a non-empty list of positive numbers')],
    'with_mask': [('1', 'setting with_mask = 1: needs True or False')],
    'coco_metric': [("['box']", "setting coco_metric = ['box']: needs a non-empty list of 'bbox', 'segm'")],
}
CASES = [(name, text, message) for name, rows in WRONG.items() for text, message in rows]


def child(tmp_path: Path, base: Path, text: str, name: str = 'my_config.py') -> Path:
    """A user's config file inheriting ``base`` with ``text``."""
    path = tmp_path / name
    path.write_text(f'_base_ = {str(base)!r}\n{text}\n')
    return path


def test_every_setting_the_configs_name_has_a_row():
    names = {m.group(1) for path in DOWNSTREAM.rglob('*.py')
             for m in re.finditer(r"'\$\{(?:len\()?(\w+)\)?\}", path.read_text())}
    assert names == set(SETTINGS)
    assert set(WRONG) | {'img_scale', 'pad_size'} == set(SETTINGS)


@pytest.mark.parametrize('name, text, message', CASES, ids=[f'{n}={t}' for n, t, _ in CASES])
def test_a_setting_of_the_wrong_type_or_range_is_one_line_naming_it(name, text, message, tmp_path):
    with pytest.raises(SettingError, match='^' + re.escape(message)) as error:  # as MMEngine reads the config
        Config.fromfile(str(child(tmp_path, EXAMPLE, f'{name} = {text}')))
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('text, message', [
    ('img_scale = (2048, )', 'setting img_scale = (2048,): needs a (w, h) pair of positive ints'),
    ("pad_size = '${image_size}'\nimage_size = '64'", "setting image_size = '64': needs a positive int"),
    ('pad_size = -4', 'setting pad_size = -4: needs a positive int')])
def test_the_segmentation_settings_are_checked_too(text, message, tmp_path):
    with pytest.raises(SettingError, match='^' + re.escape(message)):
        resolve_settings(Config.fromfile(str(child(tmp_path, ADE_B, text))))


def test_data_root_is_a_folder_its_slash_added_and_an_h_w_pair_is_refused(tmp_path):
    cfg = resolve_settings(Config.fromfile(str(child(tmp_path, EXAMPLE, "data_root = '/data/trees'"))))
    assert cfg.data_root == cfg.train_dataloader.dataset.data_root == '/data/trees/'
    assert cfg.val_evaluator.ann_file == '/data/trees/annotations/instances_val.json'
    cfg = resolve_settings(Config.fromfile(str(child(tmp_path, EXAMPLE, "data_root = '/data/trees/'"))))
    assert cfg.val_evaluator.ann_file == '/data/trees/annotations/instances_val.json'
    cfg = Config.fromfile(str(EXAMPLE))  # as --cfg-options: checked in the merge
    with pytest.raises(SettingError, match='^setting max_iters = 0: needs a positive int'):
        cfg.merge_from_dict({'max_iters': 0})
    cfg.max_iters = 0  # assigned: checked when the settings are resolved
    with pytest.raises(SettingError, match='^setting max_iters = 0: needs a positive int'):
        resolve_settings(cfg)


def test_the_train_tool_exits_in_one_line_before_building_anything(tmp_path):
    """The case's variants through tools/train.py, in one fresh process: rc 1, `error: setting ...`, no work dir."""
    variants = {name: child(tmp_path, EXAMPLE, name.replace('=', ' = '), f'variant_{index}.py')
                for index, name in enumerate(("image_size='128'", 'image_size=(128, 96)', 'image_size=128.0',
                                              "in_channels='3'", "max_iters='2'", 'checkpoint=None', 'classes=()'))}
    script = ('import sys\nfrom tools.train import main\n'
              'for name, config, work in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):\n'
              '    try:\n        main([config, "--work-dir", work])\n    except SystemExit as error:\n'
              '        print(name, "->", error.code, flush=True)\n')
    argv = [str(item) for index, (name, path) in enumerate(variants.items())
            for item in (name, path, tmp_path / f'work_{index}')]
    out = subprocess.run([sys.executable, '-c', script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(' -> ', 1) for line in out.stdout.splitlines() if ' -> ' in line)
    assert set(lines) == set(variants), out.stdout + out.stderr[-2000:]
    for name, line in lines.items():
        setting, value = name.split('=')
        assert line.startswith(f'error: setting {setting} = {value}: needs '), line
    assert not list(tmp_path.glob('work_*'))


# ----------------------------------------------------------------------------------------------- classes vs the file

def _coco_set(root: Path, categories: list[str]) -> Path:
    """Annotation files (no images: the check comes first) of a COCO set with these categories."""
    (root / 'annotations').mkdir(parents=True)
    for split in ('train', 'val'):
        coco = dict(images=[dict(id=1, file_name='a.png', width=8, height=8)],
                    annotations=[dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 4, 4], area=16, iscrowd=0)],
                    categories=[dict(id=i + 1, name=name) for i, name in enumerate(categories)])
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return root


@pytest.mark.parametrize('categories, classes, message', [
    (['Tree'], ('Tree', 'Bush'), r"not in the file: 'Bush'$"),
    (['Tree'], ('Bush', ), r"not in the file: 'Bush'; in the file, not in classes: 'Tree'$"),
    (['Tree', 'Snag'], ('Tree', ), r"in the file, not in classes: 'Snag'$"),
    (['Tree', 'Snag'], ('Snag', 'Tree'), r"the same names in another order \(first at position 0: the file has "
                                         r"'Tree', classes 'Snag'\); mmdet numbers the labels in the file's order: "
                                         r"write classes as 'Tree', 'Snag'$"),
])
def test_classes_that_are_not_the_files_categories_are_refused(categories, classes, message, tmp_path):
    root = _coco_set(tmp_path / 'data', categories)
    cfg = resolve_settings(Config.fromfile(str(child(tmp_path, EXAMPLE, f'data_root = {str(root)!r}\n'
                                                                        f'classes = {classes!r}'))))
    with pytest.raises(SettingError, match=f'^{root}/annotations/instances_train.json: the categories of this '
                                           r'annotation file are not the setting classes \(train_dataloader.dataset.'
                                           r'metainfo.classes\): ' + message):
        check_classes_match_annotations(cfg)
    cfg.merge_from_dict({'train_dataloader.dataset.metainfo.classes': categories})
    with pytest.raises(SettingError, match=r'^.*instances_val.json: .* \(val_dataloader.dataset.metainfo.classes\)'):
        check_classes_match_annotations(cfg)  # the validation set is checked as well
    cfg.merge_from_dict({'val_dataloader.dataset.metainfo.classes': categories,
                         'test_dataloader.dataset.metainfo.classes': categories})
    check_classes_match_annotations(cfg)


def test_missing_or_non_coco_annotation_files_are_left_to_the_data_set(tmp_path):
    cfg = resolve_settings(Config.fromfile(str(child(tmp_path, EXAMPLE, f"data_root = '{tmp_path}/none'"))))
    check_classes_match_annotations(cfg)  # no file: mmdet names it when it builds the data set
    check_classes_match_annotations(resolve_settings(Config.fromfile(str(DEMO_SEG))))  # no ann_file


def test_the_categories_are_read_alone_from_the_end_else_from_the_whole_file(tmp_path):
    path = tmp_path / 'a.json'
    path.write_text('{"categories" :\n [{"id": 2, "name": "B"}, {"id": 1, "name": "A"}], "images": [], '
                    '"annotations": [{"supercategory": "categories"}]}')
    assert coco_category_names(path) == ['B', 'A']
    path.write_text('{"images": [], "categories": [{"id": 1, "name": "A"}]}')
    assert coco_category_names(path) == ['A']
    for text in ('', '{"images": []}', 'not json', '[1, 2]', '{"categories": [1]}'):
        path.write_text(text)
        assert coco_category_names(path) is None


def test_the_train_tool_refuses_classes_of_another_order_before_the_first_iteration(tmp_path):
    root = _coco_set(tmp_path / 'data', ['Tree', 'Snag'])
    work = tmp_path / 'work'
    out = subprocess.run([sys.executable, 'tools/train.py', str(EXAMPLE), '--work-dir', str(work), '--cfg-options',
                          f'data_root={root}', 'classes=(Snag,Tree)'], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f'error: {root}/annotations/instances_train.json: the categories of this annotation file are not the '
        "setting classes (train_dataloader.dataset.metainfo.classes): the same names in another order (first at "
        "position 0: the file has 'Tree', classes 'Snag'); mmdet numbers the labels in the file's order: "
        "write classes as 'Tree', 'Snag'")
    assert not work.exists()
