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

:class:`DownstreamRunner` (the configs' ``runner_type``) resolves them before anything is built, so stock
mmdet / mmseg ``tools/train.py`` and ``tools/test.py`` (which build a config's ``runner_type``) and ours
train exactly what the final config says. Code that builds from such a config itself calls
:func:`resolve_settings` first.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from ..registry import RUNNERS
from .runner.fit_checks import check_pretrained_backbone

#: ``${name}``, ``${a.b}`` or ``${len(name)}``
PLACEHOLDER = re.compile(r'\$\{(?:len\((?P<len>[A-Za-z_][\w.]*)\)|(?P<name>[A-Za-z_][\w.]*))\}')


class SettingError(KeyError):
    """A placeholder names no top-level setting of the config, or settings refer to each other in a cycle."""

    def __str__(self) -> str:
        return str(self.args[0])


def resolve_settings(cfg: Config) -> Config:
    """Replace every placeholder of ``cfg`` (see the module docstring) by its setting's value, in place.

    Settings may themselves hold placeholders (``metainfo = dict(classes='${classes}')``); they are
    resolved first. Configs without placeholders are returned unchanged.

    Raises:
        SettingError: naming the field (``model.backbone.img_size``) and the missing setting, the cycle, or a
            ``len`` of something that is not a tuple or list (``classes = ('Tree')`` without its comma).
    """
    def lookup(name: str, field: str, seen: tuple[str, ...]) -> object:
        if name in seen:
            raise SettingError(f'{field}: settings refer to each other in a cycle: {" -> ".join(seen + (name, ))}')
        value: object = root
        for part in name.split('.'):
            if not isinstance(value, Mapping) or part not in value:
                raise SettingError(f'{field}: "${{{name}}}" names no setting of the config: set `{name}` '
                                   'at its top level (or with --cfg-options)')
            value = value[part]
        return resolve(value, name, seen + (name, ))

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
    for key, value in root.items():  # resolve() builds new containers: no two fields share one object
        cfg[key] = resolve(value, key, ())
    return cfg


@RUNNERS.register_module()
class DownstreamRunner(Runner):
    """MMEngine's ``Runner`` for the configs of ``configs/downstream/``.

    Before building anything, :meth:`from_cfg` fills in the settings (:func:`resolve_settings`, on a copy)
    and checks that the backbone's ``Pretrained`` checkpoint exists and fits the backbone
    (:func:`~mmincubation.engine.runner.fit_checks.check_pretrained_backbone`); then it is MMEngine's Runner.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        cfg = resolve_settings(copy.deepcopy(cfg))
        check_pretrained_backbone(cfg)
        return super().from_cfg(cfg)
