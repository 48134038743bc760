"""The table of supported datasets: TFDS name and version, image shape, classes, shared files.

Everything other modules need to know about a dataset without touching TFDS lives here, so
that building a model for "cifar100" (100 classes, 32x32x3) needs no prepared data.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)

# Superclass of each CIFAR-100 fine class (index = fine label); fixed by the dataset itself.
CIFAR100_FINE_TO_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)
CIFAR100_FINE_TO_COARSE.flags.writeable = False


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one dataset.

    `tfds_version` is the version the installed TFDS builder reads (its `VERSION`); a prepared
    dataset stored under any other version is invisible to `tfds.load`. `shared_files` maps
    each split to its .npz file name in the shared data directory; `shared_notes` says how a
    shared split differs from the full TFDS split, if it does.
    """

    name: str
    tfds_name: str
    tfds_version: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    shared_files: types.MappingProxyType
    coarse_class_names: tuple[str, ...] = ()
    shared_notes: types.MappingProxyType = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}))

    @property
    def num_classes(self) -> int:
        """Number of (fine) classes, i.e. the width of a classifier's output."""
        return len(self.class_names)


DATASETS = types.MappingProxyType({
    "cifar10": DatasetSpec(
        name="cifar10", tfds_name="cifar10", tfds_version="3.0.2", image_shape=(32, 32, 3),
        class_names=CIFAR10_CLASSES,
        shared_files=types.MappingProxyType(
            {"train": "cifar10_train.npz", "test": "cifar10_test.npz"}),
    ),
    "cifar100": DatasetSpec(
        name="cifar100", tfds_name="cifar100", tfds_version="3.0.2", image_shape=(32, 32, 3),
        class_names=CIFAR100_CLASSES, coarse_class_names=CIFAR100_COARSE_CLASSES,
        shared_files=types.MappingProxyType(
            {"train": "cifar100_train_subset.npz", "test": "cifar100_test.npz"}),
        shared_notes=types.MappingProxyType({
            "train": "the 5,000-image subset (the first 50 images of every fine class), "
                     "not the full 50,000-image training set"}),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist", tfds_name="fashion_mnist", tfds_version="3.0.1",
        image_shape=(28, 28, 1), class_names=FASHION_MNIST_CLASSES,
        shared_files=types.MappingProxyType(
            {"train": "fashion_mnist_train.npz", "test": "fashion_mnist_test.npz"}),
    ),
})


def info(name: str) -> DatasetSpec:
    """Return the static facts of dataset `name`, or raise ValueError listing the known names."""
    if name not in DATASETS:
        raise ValueError(
            f"name={name!r} is not a supported dataset; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def class_names(name: str) -> tuple[str, ...]:
    """Class names of dataset `name`, indexed by label."""
    return info(name).class_names
