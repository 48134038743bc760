"""lru_keras: Keras 3 model zoo of parameter-sharing CNNs (layer reuse, REAF, kernel sharing)."""

__version__ = "0.1.0"
