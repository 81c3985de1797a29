from .hooks import ExportWeightsHook, PhaseRecordHook
from .optimizers import TrainableParamsOptimWrapperConstructor
from .runner import IncubationRunner
from .schedulers import TimmCosineLR

__all__ = ['ExportWeightsHook', 'PhaseRecordHook', 'TrainableParamsOptimWrapperConstructor', 'IncubationRunner',
           'TimmCosineLR']
