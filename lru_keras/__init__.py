"""lru_keras: Keras 3 model zoo of parameter-sharing CNNs (layer reuse, REAF, kernel sharing)."""

__version__ = "0.1.0"

# Registers every custom layer with Keras's serialization, so that `keras.saving.load_model`
# reads a zoo model's .keras file after `import lru_keras` alone (as kimm does).
from lru_keras import layers  # noqa: E402,F401
