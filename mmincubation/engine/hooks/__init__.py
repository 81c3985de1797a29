from .export_weights_hook import ExportWeightsHook
from .phase_record_hook import PhaseRecordHook

__all__ = ['ExportWeightsHook', 'PhaseRecordHook']
