from .hooks import ExportWeightsHook, PhaseRecordHook
from .runner import IncubationRunner
from .schedulers import TimmCosineLR

__all__ = ['ExportWeightsHook', 'PhaseRecordHook', 'IncubationRunner', 'TimmCosineLR']
