"""lru_keras: Keras 3 model zoo of parameter-sharing CNNs (layer reuse, REAF, kernel sharing)."""

__version__ = "0.1.0"

from lru_keras.startup import without_startup_lines  # noqa: E402

# Registers every custom layer with Keras's serialization, so that `keras.saving.load_model`
# reads a zoo model's .keras file after `import lru_keras` alone (as kimm does). Imports
# Keras, and with it TensorFlow (whose start-up notices are not shown).
with without_startup_lines():
    from lru_keras import layers  # noqa: E402,F401
