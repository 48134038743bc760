"""Datasets for the model zoo: CIFAR-10, CIFAR-100 and Fashion-MNIST through TFDS, offline.

- `info(name)` / `class_names(name)`: static facts (classes, image shape, TFDS version).
- `import_shared(dir)` / `import_arrays(...)` / `import_npz(...)`: write real arrays into
  TFDS's prepared format so that `tfds.load(..., download=False)` works with no network.
- `load(name, split, ...)`: a batched (image float32 [0, 255], label int32) tf.data pipeline,
  with the paper's augmentation when training.
- `load_sample()`: 500 CIFAR-10 test images shipped with the package.
"""

from lru_keras.data.catalog import DATASETS, DatasetSpec, class_names, info
from lru_keras.data.pipeline import (
    augment_batch, load, random_crop, random_flip, random_rotation, split_size)
from lru_keras.data.sample import load_sample
from lru_keras.data.store import (
    DatasetNotAvailableError, default_data_dir, import_arrays, import_npz, import_shared,
    list_prepared, prepared_counts, prepared_dir, resolve_data_dir)

__all__ = [
    "DATASETS", "DatasetNotAvailableError", "DatasetSpec", "augment_batch", "class_names",
    "default_data_dir", "import_arrays", "import_npz", "import_shared", "info",
    "list_prepared", "load", "load_sample", "prepared_counts", "prepared_dir", "random_crop",
    "random_flip", "random_rotation", "resolve_data_dir", "split_size",
]
