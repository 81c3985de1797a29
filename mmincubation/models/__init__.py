from .grown_classifier import GrownClassifier
from .incubation_classifier import IncubationClassifier
from .vision_transformer import TimmInitVisionTransformer

__all__ = ['GrownClassifier', 'IncubationClassifier', 'TimmInitVisionTransformer']
