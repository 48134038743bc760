"""Tests of lru_keras.data on real images from ../shared/data, written into pytest's tmp dirs.

Most tests use small slices (a few hundred images) imported with import_arrays, so the whole
file stays well under a minute of CPU.
"""

import argparse
import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from lru_keras import data
from lru_keras.cli.data import add_data_commands
from lru_keras.data import store

@pytest.fixture(scope="module")
def cifar10_test(shared_arrays):
    """Every 50th row of the real CIFAR-10 test set: 200 images covering all 10 classes."""
    return {key: value[::50] for key, value in shared_arrays("cifar10_test.npz").items()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, cifar10_test):
    """A TFDS data dir with cifar10 'train' (100 rows) then 'test' (200 rows) imported."""
    target = tmp_path_factory.mktemp("tfds")
    x, y = cifar10_test["x"], cifar10_test["y"]
    data.import_arrays("cifar10", "train", x[1::2], y[1::2], target)
    data.import_arrays("cifar10", "test", x, y, target, ids=cifar10_test["filenames"])
    return target


def _as_arrays(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate a batched (images, labels) dataset into two numpy arrays."""
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_imported_split_loads_back_identical_and_in_order(data_dir, cifar10_test):
    x, y = _as_arrays(data.load("cifar10", "test", batch_size=64, data_dir=data_dir))
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (200, 32, 32, 3)
    np.testing.assert_array_equal(x, cifar10_test["x"].astype(np.float32))
    np.testing.assert_array_equal(y, cifar10_test["y"])


def test_real_tfds_builder_reads_import_with_class_names_and_ids(data_dir, cifar10_test):
    ds = tfds.load("cifar10", split="test[:3]", data_dir=str(data_dir), download=False)
    ids = [example["id"].decode() for example in tfds.as_numpy(ds)]
    assert ids == [name.decode() for name in cifar10_test["filenames"][:3]]
    builder = tfds.builder("cifar10", data_dir=str(data_dir))
    assert builder.info.features["label"].names == list(data.class_names("cifar10"))


def test_import_of_one_split_keeps_the_other_prepared_splits(data_dir):
    assert data.prepared_counts("cifar10", data_dir) == {"train": 100, "test": 200}


def test_importing_the_same_arrays_twice_skips(data_dir, cifar10_test, capsys):
    info_file = data.prepared_dir("cifar10", data_dir) / "dataset_info.json"
    before = info_file.stat().st_mtime_ns
    data.import_arrays("cifar10", "test", cifar10_test["x"], cifar10_test["y"], data_dir,
                       ids=cifar10_test["filenames"])
    assert "skipped" in capsys.readouterr().out
    assert info_file.stat().st_mtime_ns == before


def test_reimport_of_other_arrays_of_the_same_size_rewrites_the_split(tmp_path, cifar10_test,
                                                                      capsys):
    x, y = cifar10_test["x"][:20], cifar10_test["y"][:20]
    data.import_arrays("cifar10", "test", x, y, tmp_path)
    data.import_arrays("cifar10", "test", x[::-1], y[::-1], tmp_path)
    out = capsys.readouterr().out
    assert "skipped" not in out and "Downloading and preparing" not in out
    images, labels = _as_arrays(data.load("cifar10", data_dir=tmp_path))
    np.testing.assert_array_equal(images, x[::-1].astype(np.float32))
    np.testing.assert_array_equal(labels, y[::-1])


def test_import_shared_writes_all_splits_says_cifar100_train_is_subset_and_skips_next_time(
        tmp_path, capsys, shared_arrays):
    shared = tmp_path / "shared"
    shared.mkdir()
    for file_name, step in (("cifar100_train_subset.npz", 50), ("cifar100_test.npz", 100)):
        np.savez(shared / file_name, **{k: v[::step] for k, v in shared_arrays(file_name).items()})
    target = tmp_path / "tfds"
    data.import_shared(shared, ["cifar100"], target)
    assert "5,000-image subset" in capsys.readouterr().out
    assert data.prepared_counts("cifar100", target) == {"train": 100, "test": 100}
    examples = tfds.as_numpy(tfds.load("cifar100", split="test", data_dir=str(target),
                                       download=False, batch_size=-1))
    expected = shared_arrays("cifar100_test.npz")
    np.testing.assert_array_equal(examples["coarse_label"], expected["y_coarse"][::100])
    np.testing.assert_array_equal(examples["label"], expected["y"][::100])
    data.import_shared(shared, ["cifar100"], target)
    assert "skipped" in capsys.readouterr().out
    test_file = shared / "cifar100_test.npz"
    np.savez(test_file, **{k: v[1::100] for k, v in shared_arrays(test_file.name).items()})
    data.import_shared(shared, ["cifar100"], target)  # same counts, other images: rewritten
    assert "skipped" not in capsys.readouterr().out
    examples = tfds.as_numpy(tfds.load("cifar100", split="test", data_dir=str(target),
                                       download=False, batch_size=-1))
    np.testing.assert_array_equal(examples["label"], expected["y"][1::100])


def test_fashion_mnist_round_trip_keeps_28x28x1(tmp_path, shared_arrays):
    arrays = shared_arrays("fashion_mnist_test.npz")
    x, y = arrays["x"][:64], arrays["y"][:64]
    data.import_arrays("fashion_mnist", "test", x, y, tmp_path)
    images, labels = _as_arrays(data.load("fashion_mnist", data_dir=tmp_path))
    np.testing.assert_array_equal(images, x.astype(np.float32))
    np.testing.assert_array_equal(labels, y)


def test_wrong_array_shape_raises_value_error_naming_file_array_and_shape(tmp_path,
                                                                         cifar10_test):
    path = tmp_path / "gray.npz"
    np.savez(path, x=cifar10_test["x"][..., 0], y=cifar10_test["y"])
    with pytest.raises(ValueError, match=r"gray\.npz.*'x'.*\(n, 32, 32, 3\)"):
        data.import_npz("cifar10", "test", path, tmp_path / "tfds")
    assert not (tmp_path / "tfds" / "cifar10").exists()


def test_missing_data_raises_one_error_naming_dir_and_import_command(tmp_path):
    empty = tmp_path / "empty"
    with pytest.raises(data.DatasetNotAvailableError) as raised:
        data.load("cifar100", "test", data_dir=empty)
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    assert f"lru-keras data import --from-shared ../shared/data --data-dir {empty}" in message
    assert "'cifar100'" in message and str(empty) in message
    assert not empty.exists()


def test_default_data_dir_is_tfds_and_not_prepared_names_it_and_the_command(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir(None) == tmp_path
    with pytest.raises(data.DatasetNotAvailableError) as raised:
        data.load("cifar10", "test")
    message = str(raised.value)
    assert f"not prepared in data_dir '{tmp_path}'" in message
    assert "`lru-keras data import --from-shared ../shared/data` (in a checkout: `make data`)" \
        in message


@pytest.mark.parametrize("kwargs, argument", [
    ({"name": "cifar11"}, "name="),
    ({"split": "tarin"}, "split="),
    ({"split": "train[:-5000]"}, "split="),
    ({"batch_size": 0}, "`batch_size`"),
    ({"shuffle": "yes"}, "shuffle="),
    ({"augment": 1}, "augment="),
])
def test_bad_arguments_raise_value_error_naming_the_argument(data_dir, kwargs, argument):
    arguments = {"name": "cifar10", "split": "test", "data_dir": data_dir} | kwargs
    with pytest.raises(ValueError, match=argument):
        data.load(**arguments)


def test_augmentation_keeps_shapes_range_and_labels_but_changes_images(data_dir):
    plain_x, plain_y = _as_arrays(data.load("cifar10", data_dir=data_dir))
    x, y = _as_arrays(data.load("cifar10", data_dir=data_dir, augment=True, seed=3))
    again_x, _ = _as_arrays(data.load("cifar10", data_dir=data_dir, augment=True, seed=3))
    assert x.shape == plain_x.shape and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 255.0
    np.testing.assert_array_equal(y, plain_y)
    changed = np.any(x != plain_x, axis=(1, 2, 3))
    assert changed.mean() > 0.95
    np.testing.assert_array_equal(x, again_x)


def test_training_shuffles_the_whole_split(data_dir):
    _, labels = _as_arrays(data.load("cifar10", "test", data_dir=data_dir))
    _, shuffled = _as_arrays(data.load("cifar10", "test", data_dir=data_dir, training=True,
                                       seed=0, batch_size=50, drop_remainder=True))
    assert len(shuffled) == 200
    assert sorted(shuffled) == sorted(labels) and not np.array_equal(shuffled, labels)


def test_random_crop_equals_zero_padded_crop(cifar10_test):
    images = cifar10_test["x"][:40].astype(np.float32)
    cropped = data.random_crop(tf.constant(images), tf.constant([1, 2])).numpy()
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    windows = {(i, j) for i in range(9) for j in range(9)}
    for image, out in zip(padded, cropped):
        assert any(np.array_equal(image[i:i + 32, j:j + 32], out) for i, j in windows)


def test_cropped_white_image_sometimes_shows_black_borders():
    white = tf.fill([32, 32, 32, 3], 255.0)
    out = data.random_crop(white, tf.constant([0, 7])).numpy()
    assert set(np.unique(out)) <= {0.0, 255.0}
    black_border = [not (img[0].any() and img[-1].any() and img[:, 0].any() and img[:, -1].any())
                    for img in out]
    assert 0 < sum(black_border) and np.all(out[:, 4:28, 4:28] == 255.0)


def test_rotation_fills_corners_with_zeros_and_keeps_the_centre():
    white = tf.fill([16, 32, 32, 3], 255.0)
    out = data.random_rotation(white, tf.constant([5, 5])).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.any(out[:, 0, 0] < 128.0)
    # Pixels 3..28 lie within 12.5 px of the centre (15.5) on each axis; turned by at most 10
    # degrees they sample within 12.5 * (cos 10 + sin 10) = 14.5 px of it, inside the image, so
    # they stay white (any turn beyond ~16 degrees would darken some of them).
    assert np.all(out[:, 3:29, 3:29] >= 254.9)


def test_random_flip_mirrors_some_images_and_leaves_the_rest(cifar10_test):
    images = cifar10_test["x"][:32].astype(np.float32)
    out = data.random_flip(tf.constant(images), tf.constant([4, 2])).numpy()
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    unchanged = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(m or u for m, u in zip(mirrored, unchanged)) and any(mirrored) and any(unchanged)


def test_sample_has_50_per_class_and_matches_shared_test_pixels(shared_arrays):
    x, y = data.load_sample()
    assert x.shape == (500, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [50] * 10
    sample_file = importlib.resources.files("lru_keras.sample_data") / "cifar10_test_sample.npz"
    with sample_file.open("rb") as file, np.load(file) as sample:
        indices, filenames = sample["indices"], sample["filenames"]
    shared = shared_arrays("cifar10_test.npz")
    np.testing.assert_array_equal(x, shared["x"][indices])
    np.testing.assert_array_equal(y, shared["y"][indices])
    np.testing.assert_array_equal(filenames, shared["filenames"][indices])


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_table_matches_installed_tfds_builders(name, tmp_path):
    spec = data.info(name)
    builder = tfds.builder(spec.tfds_name, data_dir=str(tmp_path))
    assert str(builder.VERSION) == spec.tfds_version
    features = builder.info.features
    assert features["image"].shape == spec.image_shape
    assert features["label"].num_classes == spec.num_classes == len(data.class_names(name))
    if name == "fashion_mnist":  # the only builder that knows its names without downloading
        assert tuple(features["label"].names) == data.class_names(name)


def test_cli_imports_an_npz_and_lists_it(tmp_path, cifar10_test, capsys):
    path = tmp_path / "few.npz"
    np.savez(path, x=cifar10_test["x"][:20], y=cifar10_test["y"][:20])
    parser = argparse.ArgumentParser(prog="lru-keras")
    add_data_commands(parser.add_subparsers(dest="command"))
    target = str(tmp_path / "tfds")
    for argv in (["data", "import", "--dataset", "cifar10", "--split", "train", "--npz",
                  str(path), "--data-dir", target], ["data", "list", "--data-dir", target]):
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    assert "cifar10        train 20" in capsys.readouterr().out


def test_interrupted_import_leaves_nothing_half_written(tmp_path, cifar10_test, monkeypatch):
    def fail_midway(**kwargs):
        (Path(kwargs["data_dir"]) / "cifar10" / "3.0.2").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(tfds.dataset_builders, "store_as_tfds_dataset", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        data.import_arrays("cifar10", "test", cifar10_test["x"][:8], cifar10_test["y"][:8],
                           tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_import_record_means_importing_again(tmp_path, cifar10_test, capsys):
    """The record of what each split was imported from only lets a re-import be skipped: a
    damaged one is said and counts as none, and the import writes it anew."""
    x, y = cifar10_test["x"][:8], cifar10_test["y"][:8]
    data.import_arrays("cifar10", "test", x, y, tmp_path)
    record = data.prepared_dir("cifar10", tmp_path) / store.SOURCES_FILE
    recorded = record.read_text()
    record.write_text("{not json")
    capsys.readouterr()
    data.import_arrays("cifar10", "test", x, y, tmp_path)
    out = capsys.readouterr().out
    assert f"{record} is damaged" in out and "writing splits" in out
    assert record.read_text() == recorded
