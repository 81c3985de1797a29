from .incubation_classifier import IncubationClassifier
from .vision_transformer import TimmInitVisionTransformer

__all__ = ['IncubationClassifier', 'TimmInitVisionTransformer']
