from .hooks import ExportWeightsHook, PhaseRecordHook
from .optimizers import TrainableParamsOptimWrapperConstructor
from .runner import IncubationRunner

__all__ = ['ExportWeightsHook', 'PhaseRecordHook', 'TrainableParamsOptimWrapperConstructor', 'IncubationRunner']
