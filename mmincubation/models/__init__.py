from .incubation_classifier import IncubationClassifier

__all__ = ['IncubationClassifier']
