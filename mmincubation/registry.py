"""Registries of the ``mmincubation`` scope, children of mmpretrain's.

Being children of mmpretrain's registries, our configs (``default_scope='mmincubation'``) build every
mmpretrain component by its plain name and our own ones by theirs. mmdet/mmseg configs reach ours as
``type='mmincubation.X'``: MMEngine imports ``mmincubation.registry`` for that scope, and
``locations`` imports the module that registers ``X`` on first use.
"""
from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain_registry


def _child(name: str, location: str) -> Registry:
    parent = getattr(mmpretrain_registry, name)
    return Registry(parent.name, parent=parent, scope='mmincubation', locations=[location])


RUNNERS = _child('RUNNERS', 'mmincubation.engine')
LOOPS = _child('LOOPS', 'mmincubation.engine')
HOOKS = _child('HOOKS', 'mmincubation.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('OPTIM_WRAPPER_CONSTRUCTORS', 'mmincubation.engine')
DATASETS = _child('DATASETS', 'mmincubation.datasets')
DATA_SAMPLERS = _child('DATA_SAMPLERS', 'mmincubation.datasets')
TRANSFORMS = _child('TRANSFORMS', 'mmincubation.datasets')
MODELS = _child('MODELS', 'mmincubation.models')
METRICS = _child('METRICS', 'mmincubation.evaluation')
VISUALIZERS = _child('VISUALIZERS', 'mmincubation.visualization')
