"""Registries of the ``mmincubation`` scope.

They are children of MMEngine's root registries, like those of mmpretrain, mmdet and mmseg, so every
OpenMMLab config reaches our components as ``type='mmincubation.X'`` whatever its ``default_scope``:
MMEngine imports ``mmincubation.registry`` for that scope prefix and ``locations`` imports the module
that registers ``X`` on first use. (Children of mmpretrain's registries would be grandchildren of the
root, which MMEngine 0.10.7's cross-scope lookup never searches: ``mmincubation.X`` would then fail
from runners, mmdet and mmseg alike.) Our configs keep ``default_scope='mmpretrain'`` (or mmdet/mmseg
for downstream ones), so stock components keep their plain names.
"""
from mmengine import registry as mmengine_registry
from mmengine.registry import Registry


def _child(name: str, *locations: str) -> Registry:
    parent = getattr(mmengine_registry, name)
    return Registry(parent.name, parent=parent, scope='mmincubation', locations=list(locations))


RUNNERS = _child('RUNNERS', 'mmincubation.engine')
STRATEGIES = _child('STRATEGIES', 'mmincubation.engine.runner.strategies')
HOOKS = _child('HOOKS', 'mmincubation.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('OPTIM_WRAPPER_CONSTRUCTORS', 'mmincubation.engine',
                                    'mmincubation.engine.layer_decay')
DATASETS = _child('DATASETS', 'mmincubation.datasets', 'mmincubation.datasets.dmt_split')
DATA_SAMPLERS = _child('DATA_SAMPLERS', 'mmincubation.datasets')
TRANSFORMS = _child('TRANSFORMS', 'mmincubation.datasets.transforms')
MODELS = _child('MODELS', 'mmincubation.models', 'mmincubation.models.necks')
PARAM_SCHEDULERS = _child('PARAM_SCHEDULERS', 'mmincubation.engine.schedulers')
