"""Settings of the downstream configs that reach every field depending on them, whichever config sets them.

MMEngine evaluates a base config's variables once, when that file is read: a child config (or
``--cfg-options``) that sets ``image_size = (128, 128)`` changes the top-level variable and nothing that the
base computed from it (``backbone.img_size``, the pipelines' sizes stay the base's, silently). So the
configs of ``configs/downstream/`` refer to their few user settings (``checkpoint``, ``classes``,
``image_size``, ``data_root``, ...) by placeholder strings, filled in from the final config:

* ``'${name}'`` (the whole string) is replaced by the value of the top-level key ``name`` (any type;
  ``name`` may be dotted: ``'${metainfo.classes}'``);
* ``'${len(name)}'`` by its length (``num_classes='${len(classes)}'``);
* ``'${name}'`` inside a longer string by ``str(value)`` (``ann_file='${data_root}annotations/val.json'``).

A setting of :data:`SETTINGS` is checked when a placeholder first names it, so a value of the wrong type or
range (``image_size = '128'``, ``classes = ()``, ``max_iters = 2.5``) stops in one line naming the setting, the
value and what it needs, not deep in mmdet / torch; ``data_root`` is a folder: a missing trailing ``/`` is
added. :class:`DownstreamRunner` also checks that the ``classes`` of COCO-style data sets are the categories of
their annotation files (:func:`check_classes_match_annotations`).

They are filled in when MMEngine builds the ``Config`` of a config that names :data:`RUNNER_TYPE` (its
``runner_type``; mmincubation/compat.py): ``Config.fromfile`` returns the final config's values, so the stock
inference APIs (mmdet's ``init_detector`` / ``DetInferencer``, mmseg's ``init_model`` / ``MMSegInferencer``),
``print_config`` and anything else that reads the file see real numbers (:func:`fill_settings`). The config keeps
each filled field's placeholder under :data:`FILLED`, so a setting changed afterwards still reaches its fields:
``merge_from_dict`` (``--cfg-options``, ``init_detector(cfg_options=...)``) fills them in again, and
:func:`resolve_settings` does for a setting assigned in Python (``cfg.image_size = 128``). A field set directly
keeps its value. :class:`DownstreamRunner` (the configs' ``runner_type``) calls :func:`resolve_settings` before
anything is built, so stock mmdet / mmseg ``tools/train.py`` and ``tools/test.py`` (which build a config's
``runner_type``) and ours train exactly what the final config says.
"""
from __future__ import annotations

import copy
import json
import mmap
import os.path as osp
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mmcv.image.io import imread_flags
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from ..registry import RUNNERS
from .runner.fit_checks import check_pretrained_backbone

#: The ``runner_type`` of the configs whose placeholders these are: a config that names it is filled in when MMEngine
#: builds its ``Config`` (:func:`fill_settings`, mmincubation/compat.py).
RUNNER_TYPE = 'mmincubation.DownstreamRunner'
#: The top-level key under which a config filled in on loading keeps its placeholders (:func:`fill_settings`).
FILLED = 'filled_placeholders'
#: Where a field is: its keys and list indices from the top of the config.
FieldPath = tuple[str | int, ...]
#: ``${name}``, ``${a.b}`` or ``${len(name)}``
PLACEHOLDER = re.compile(r'\$\{(?:len\((?P<len>[A-Za-z_][\w.]*)\)|(?P<name>[A-Za-z_][\w.]*))\}')


class SettingError(KeyError):
    """A placeholder names no top-level setting of the config, settings refer to each other in a cycle, a setting
    has a value of the wrong type or range, or the classes are not the categories of the annotation file."""

    def __str__(self) -> str:
        return str(self.args[0])


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _numbers(value: object, positive: bool = False) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and (v > 0 or not positive)
                    for v in value))


def _class_names(value: object) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0 and len(set(value)) == len(value)
            and all(isinstance(name, str) and name.strip() for name in value))


def _path(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


COCO_METRICS = ('bbox', 'segm', 'proposal', 'proposal_fast')


@dataclass(frozen=True)
class Setting:
    """What one setting needs: ``accepts(value)`` says whether a value is valid, ``needs`` says so in words (for
    the message), ``hint(value)`` (if any) adds what a refused value probably meant, ``normalize`` (if any) turns
    an accepted value into the one the config uses."""

    needs: str
    accepts: Callable[[object], bool]
    normalize: Callable[[object], object] | None = None
    hint: Callable[[object], str] | None = None


#: Every user setting of the configs of ``configs/downstream/``: checked (and normalized) when a placeholder first
#: names it. A new setting is one row.
SETTINGS: dict[str, Setting] = {
    'checkpoint': Setting('a non-empty path string (the classifier whose backbone.* weights are loaded)', _path),
    'classes': Setting("a non-empty tuple or list of distinct, non-empty class-name strings, e.g. ('Tree', )",
                       _class_names,
                       hint=lambda v: f' (one name needs a comma: ({v!r}, ))' if isinstance(v, str) else ''),
    'coco_metric': Setting(f'a non-empty list of {", ".join(map(repr, COCO_METRICS))}',
                           lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                           and all(isinstance(m, str) and m in COCO_METRICS for m in v)),
    'color_type': Setting(f'one of {", ".join(map(repr, imread_flags))} (mmcv\'s imread flags)',
                          lambda v: isinstance(v, str) and v in imread_flags),
    'data_root': Setting("a non-empty folder path string ('./' for the working directory; a missing trailing / is "
                         'added)', _path, lambda v: v if v.endswith('/') else v + '/'),
    'image_size': Setting('a positive int, px: the side of the square input (an (h, w) pair is not supported: the '
                          'configs use the one side for both)', _positive_int),
    'img_scale': Setting('a (w, h) pair of positive ints, px', lambda v: isinstance(v, (list, tuple))
                         and len(v) == 2 and all(map(_positive_int, v))),
    'in_channels': Setting('the int 1 (grey images) or 3 (RGB)', lambda v: _positive_int(v) and v in (1, 3)),
    'max_iters': Setting('a positive int (training iterations)', _positive_int),
    'mean': Setting('a non-empty list of numbers, one per image channel', _numbers),
    'pad_size': Setting('a positive int, px', _positive_int),
    'std': Setting('a non-empty list of positive numbers, one per image channel',
                   lambda v: _numbers(v, positive=True)),
    'warmup_iters': Setting('a positive int (warm-up iterations)', _positive_int),
    'with_mask': Setting('True or False', lambda v: isinstance(v, bool)),
}


def check_setting(name: str, value: object) -> object:
    """``value`` of the setting ``name`` as the config uses it (``data_root`` ends in ``/``); a name without a
    row in :data:`SETTINGS` is returned as it is.

    Raises:
        SettingError: one line naming the setting, the value and what it needs.
    """
    setting = SETTINGS.get(name)
    if setting is None:
        return value
    if not setting.accepts(value):
        raise SettingError(f'setting {name} = {value!r}: needs {setting.needs}'
                           + (setting.hint(value) if setting.hint else ''))
    return setting.normalize(value) if setting.normalize else value


def resolve_settings(cfg: Config) -> Config:
    """Replace every placeholder of ``cfg`` (see the module docstring) by its setting's value, in place.

    Settings may themselves hold placeholders (``metainfo = dict(classes='${classes}')``); they are
    resolved first. A setting of :data:`SETTINGS` that a placeholder names is checked (:func:`check_setting`),
    and the config's top-level value becomes the normalized one. Configs without placeholders are returned
    unchanged. A config filled in when it was built (:func:`fill_settings`) first gets back the placeholders of
    the fields that still hold the values filled in then, so that settings assigned since reach them, and loses
    its :data:`FILLED` record: its values are final.

    Raises:
        SettingError: naming the field (``model.backbone.img_size``) and the missing setting, the cycle, or a
            ``len`` of something that is not a tuple or list (``classes = ('Tree')`` without its comma); or
            naming a setting whose value is of the wrong type or range, and what it needs.
    """
    _restore_placeholders(cfg)

    def lookup(name: str, field: str, seen: tuple[str, ...]) -> object:
        if name in seen:
            raise SettingError(f'{field}: settings refer to each other in a cycle: {" -> ".join(seen + (name, ))}')
        if name in checked:
            return checked[name]
        value: object = root
        for part in name.split('.'):
            if not isinstance(value, Mapping) or part not in value:
                raise SettingError(f'{field}: "${{{name}}}" names no setting of the config: set `{name}` '
                                   'at its top level (or with --cfg-options)')
            value = value[part]
        value = resolve(value, name, seen + (name, ))
        if name in SETTINGS:
            checked[name] = value = check_setting(name, value)
        return value

    def substitute(text: str, field: str, seen: tuple[str, ...]) -> object:
        whole = PLACEHOLDER.fullmatch(text)
        if not whole:
            return PLACEHOLDER.sub(lambda m: str(substitute(m[0], field, seen)), text)
        name = whole['len'] or whole['name']
        value = lookup(name, field, seen)
        if not whole['len']:
            return value
        if not isinstance(value, (list, tuple)):  # a string would count its letters: ('Tree') for ('Tree', )
            raise SettingError(f'{field}: "${{len({name})}}" needs a tuple or list, {name} is {value!r}'
                               + (f" (one name needs a comma: ({value!r}, ))" if isinstance(value, str) else ''))
        return len(value)

    def resolve(value: object, field: str, seen: tuple[str, ...]) -> object:
        if isinstance(value, str):
            return substitute(value, field, seen) if '${' in value else value
        if isinstance(value, Mapping):
            return ConfigDict({key: resolve(item, f'{field}.{key}', seen) for key, item in value.items()})
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(item, f'{field}[{index}]', seen) for index, item in enumerate(value))
        return value

    root = {key: cfg[key] for key in cfg.keys()}
    checked: dict[str, object] = {}  # the settings of SETTINGS looked up so far, checked and normalized
    for key, value in root.items():  # resolve() builds new containers: no two fields share one object
        cfg[key] = resolve(value, key, ())
    for key, value in checked.items():
        cfg[key] = copy.deepcopy(value)
    return cfg


def fill_settings(cfg: Config) -> Config:
    """Fill in the placeholders of ``cfg`` as :func:`resolve_settings` does, in place, and keep them under
    :data:`FILLED`: one ``dict(field=[key, ..., index], placeholder='${...}', value=...)`` per field filled in.

    Called when MMEngine builds the ``Config`` of a config that names :data:`RUNNER_TYPE` and after its
    ``merge_from_dict`` (mmincubation/compat.py), so that every reader of the file gets the final values and a
    setting merged later still reaches its fields (a field set directly keeps its own value). A config without
    placeholders is returned unchanged.

    Raises:
        SettingError: as :func:`resolve_settings`.
    """
    _restore_placeholders(cfg)
    fields = [field for key in cfg.keys() for field in _placeholder_fields(cfg[key], (key, ))]
    if fields:
        resolve_settings(cfg)
        cfg[FILLED] = [dict(field=list(path), placeholder=text, value=copy.deepcopy(_field(cfg, path)))
                       for path, text in fields]
    return cfg


def _placeholder_fields(value: object, path: FieldPath = ()) -> Iterator[tuple[FieldPath, str]]:
    """``(path, string)`` of every string of ``value`` holding a placeholder (keys and indices from the top)."""
    if isinstance(value, str):
        if PLACEHOLDER.search(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _placeholder_fields(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _placeholder_fields(item, (*path, index))


def _field(cfg: Config, path: FieldPath) -> object:
    """The value at ``path`` (``KeyError`` / ``IndexError`` / ``TypeError`` when the config has none there)."""
    value: object = cfg
    for part in path:
        value = value[part]  # type: ignore[index]
    return value


def _replaced(container: object, path: FieldPath, value: object) -> object:
    """``container`` with ``value`` at ``path``: dicts and lists changed in place, tuples rebuilt."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(container, tuple):
        return (*container[:head], _replaced(container[head], rest, value), *container[head + 1:])
    container[head] = _replaced(container[head], rest, value)  # type: ignore[index]
    return container


def _plain(value: object) -> object:
    """``value`` with every mapping a dict and every tuple a list, for comparing what a merge may have rebuilt."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _restore_placeholders(cfg: Config) -> None:
    """Pop :data:`FILLED` and put each placeholder back where its field still holds the value filled in."""
    for record in cfg.pop(FILLED, None) or ():
        path = tuple(record['field'])
        try:
            unchanged = _plain(_field(cfg, path)) == _plain(record['value'])
        except (KeyError, IndexError, TypeError):  # the field is gone (a merge replaced what held it)
            continue
        if unchanged:
            cfg[path[0]] = _replaced(cfg[path[0]], path[1:], record['placeholder'])


def coco_category_names(path: str | Path) -> list[str] | None:
    """The category names of a COCO annotation file, in the file's order; None when it has no ``categories``
    list (or is no JSON).

    Cheap for the big files: the last ``"categories":`` key (COCO writes it last) is decoded alone, without the
    images and annotations; only a file where that fails is parsed whole.
    """
    def names(categories: object) -> list[str] | None:
        if isinstance(categories, list) and all(isinstance(c, Mapping) and isinstance(c.get('name'), str)
                                                for c in categories):
            return [c['name'] for c in categories]
        return None

    try:
        with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            key = data.rfind(b'"categories"')
            start = key + len(b'"categories"')
            colon = re.match(rb'\s*:\s*', data[start:start + 64]) if key >= 0 else None
            tail = data[start + colon.end():].decode() if colon else ''
        found = names(json.JSONDecoder().raw_decode(tail)[0])
        if found is not None:
            return found
    except ValueError:  # an empty file (mmap), not JSON from there on: parsed whole
        pass
    try:
        whole = json.loads(Path(path).read_bytes())
    except ValueError:
        return None
    return names(whole.get('categories')) if isinstance(whole, Mapping) else None


def _datasets(dataset: object, field: str) -> Iterator[tuple[str, Mapping]]:
    """``(field, dataset config)`` of ``dataset`` and the data sets it wraps (``dataset`` / ``datasets``)."""
    if not isinstance(dataset, Mapping):
        return
    yield field, dataset
    yield from _datasets(dataset.get('dataset'), f'{field}.dataset')
    for index, inner in enumerate(dataset.get('datasets') or ()):
        yield from _datasets(inner, f'{field}.datasets[{index}]')


def check_classes_match_annotations(cfg: Config) -> None:
    """Refuse data sets whose ``metainfo.classes`` are not the categories of their COCO annotation file.

    mmdet's CocoDataset and CocoMetric keep the file's categories whose names are in ``classes`` and number
    them in the file's order: a class missing from the file, a file category missing from ``classes`` (its boxes
    are dropped) or another order (each label gets another class's name) all train and evaluate without a word.
    Checked for the data sets of the train / val / test dataloaders (and those they wrap) that have
    ``metainfo.classes`` and an existing ``.json`` ``ann_file`` with a ``categories`` list (read alone:
    :func:`coco_category_names`). ``cfg`` must have its settings filled in (:func:`resolve_settings`).

    Raises:
        SettingError: naming the annotation file, the field of the classes and the difference.
    """
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if not isinstance(cfg.get(loader), Mapping):
            continue
        for field, dataset in _datasets(cfg[loader].get('dataset'), f'{loader}.dataset'):
            classes, ann_file = (dataset.get('metainfo') or {}).get('classes'), dataset.get('ann_file')
            if not isinstance(classes, (list, tuple)) or not isinstance(ann_file, str) or \
                    not ann_file.endswith('.json'):
                continue
            path = osp.join(dataset.get('data_root') or '', ann_file)
            names = coco_category_names(path) if osp.isfile(path) else None
            if names is None or names == list(classes):
                continue
            where = (f'{path}: the categories of this annotation file are not the setting classes '
                     f'({field}.metainfo.classes)')
            missing = [name for name in classes if name not in names]
            extra = [name for name in names if name not in classes]
            if missing or extra:
                raise SettingError(where + ': ' + '; '.join(
                    part for part in (f'not in the file: {_some(missing)}' if missing else '',
                                      f'in the file, not in classes: {_some(extra)}' if extra else '') if part))
            index = next((i for i, (a, b) in enumerate(zip(names, classes)) if a != b), min(len(names), len(classes)))
            raise SettingError(f'{where}: the same names in another order (first at position {index}: the file has '
                               f'{_some(names[index:index + 1])}, classes {_some(list(classes)[index:index + 1])}); '
                               f"mmdet numbers the labels in the file's order: write classes as {_some(names)}")


def _some(names: list[str], limit: int = 10) -> str:
    """``names`` in a message: the first ``limit`` of them, and how many there are in all."""
    shown = ', '.join(map(repr, names[:limit]))
    return shown if len(names) <= limit else f'{shown}, ... ({len(names)} in all)'


@RUNNERS.register_module()
class DownstreamRunner(Runner):
    """MMEngine's ``Runner`` for the configs of ``configs/downstream/``.

    Before building anything, :meth:`from_cfg` fills in and checks the settings (:func:`resolve_settings`, on a
    copy), checks that the classes are the categories of the COCO annotation files
    (:func:`check_classes_match_annotations`) and that the backbone's ``Pretrained`` checkpoint exists and fits
    the backbone (:func:`~mmincubation.engine.runner.fit_checks.check_pretrained_backbone`); then it is
    MMEngine's Runner.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        cfg = resolve_settings(copy.deepcopy(cfg))
        check_classes_match_annotations(cfg)
        check_pretrained_backbone(cfg)
        return super().from_cfg(cfg)
