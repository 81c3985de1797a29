from .fashion_mnist import CompressedFashionMNIST, extract_fashion_mnist

__all__ = ['CompressedFashionMNIST', 'extract_fashion_mnist']
