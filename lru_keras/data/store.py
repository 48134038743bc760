"""Offline import of image arrays into TFDS's prepared format, and checks of what is prepared.

The datasets are written with `tfds.dataset_builders.store_as_tfds_dataset`, using the real
TFDS builder's features and version, so that `tfds.load(name, data_dir=D, download=False)`
later reads them through the real builder without any network access. TFDS keeps one
`dataset_info.json` per dataset directory, so every write stores all splits of a dataset at
once (splits already prepared and not being replaced are read back and written again).

Beside TFDS's files, each prepared dataset keeps `SOURCES_FILE`: the sha256 of what each split
was imported from (the .npz file, or the arrays given), so that a re-import is skipped only
when its source is the same, not merely the same size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lru_keras import atomic, checksums, extras
from lru_keras.data.catalog import CIFAR100_FINE_TO_COARSE, DATASETS, DatasetSpec, info

tfds = extras.lazy("tensorflow_datasets")  # the [data] extra

IMPORT_COMMAND = "lru-keras data import --from-shared ../shared/data"
SOURCES_FILE = "lru_keras_sources.json"


class DatasetNotAvailableError(FileNotFoundError):
    """A dataset is not prepared in the TFDS data directory (and we never download)."""


@dataclasses.dataclass(frozen=True)
class SplitArrays:
    """One split's checked arrays: images, labels, CIFAR-100 superclasses and example ids."""

    x: np.ndarray
    y: np.ndarray
    y_coarse: np.ndarray | None
    ids: tuple[str, ...]


def default_data_dir() -> Path:
    """TFDS's own default data directory: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(tfds.core.constants.get_default_data_dir()).expanduser()


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """`data_dir` as an absolute Path, or the TFDS default when it is None."""
    if data_dir is None:
        return default_data_dir().absolute()
    return Path(data_dir).expanduser().absolute()


def prepared_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Directory where the prepared dataset `name` lives (whether or not it exists yet)."""
    spec = info(name)
    return resolve_data_dir(data_dir) / spec.tfds_name / spec.tfds_version


def prepared_counts(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, int] | None:
    """Example count of every prepared split of `name`, or None if it is not prepared.

    The existence check comes first so that an unprepared dataset costs no TFDS warning.
    """
    if not (prepared_dir(name, data_dir) / "dataset_info.json").is_file():
        return None
    builder = tfds.builder(info(name).tfds_name, data_dir=str(resolve_data_dir(data_dir)))
    return {split: split_info.num_examples for split, split_info in builder.info.splits.items()}


def list_prepared(data_dir: str | os.PathLike | None = None) -> dict[str, dict[str, int]]:
    """Split example counts of every supported dataset that is prepared under `data_dir`."""
    found = {name: prepared_counts(name, data_dir) for name in DATASETS}
    return {name: counts for name, counts in found.items() if counts is not None}


def not_available_error(name: str, data_dir: Path) -> DatasetNotAvailableError:
    """The error for a dataset missing from `data_dir`: the directory searched and the command
    that prepares it there (offline), or how to get it with network access."""
    spec = info(name)
    if data_dir == default_data_dir().absolute():
        command = f"`{IMPORT_COMMAND}` (in a checkout: `make data`)"
    else:
        command = f"`{IMPORT_COMMAND} --data-dir {data_dir}`"
    return DatasetNotAvailableError(
        f"Dataset {name!r} is not prepared in data_dir {str(data_dir)!r} (looked for "
        f"{prepared_dir(name, data_dir)}/dataset_info.json; this package never downloads). "
        f"To prepare it offline from the shared arrays, run {command}, or call "
        f"lru_keras.data.import_shared / lru_keras.data.import_arrays. With network access, "
        f"run tfds.load({spec.tfds_name!r}, data_dir={str(data_dir)!r}) once instead.")


def check_split_name(split: str) -> None:
    """Reject split names that TFDS cannot store (it needs a plain identifier like 'train')."""
    if not isinstance(split, str) or not split.isidentifier():
        raise ValueError(
            f"split={split!r} cannot be imported; expected a plain split name such as "
            f"'train' or 'test' (no slicing when writing)")


def check_arrays(name: str, split: str, x, y, y_coarse=None, ids=None, *,
                 source: str) -> SplitArrays:
    """Validate one split's arrays against the dataset table and return them normalised.

    `source` names where the arrays came from (a file, or the function's arguments) so that a
    wrong shape or dtype is reported against it. For CIFAR-100 a missing `y_coarse` is derived
    from the fixed fine-to-coarse table and a given one must agree with it. Missing `ids` become
    '<split>_<row>' (the row in these arrays, not the canonical CIFAR index).
    """
    spec = info(name)
    x, y = np.asarray(x), np.asarray(y)
    expected_x = (len(x) if x.ndim else 0, *spec.image_shape)
    if x.dtype != np.uint8 or x.shape != expected_x or len(x) == 0:
        raise ValueError(
            f"{source}: array 'x' has shape {x.shape} and dtype {x.dtype}; expected uint8 of "
            f"shape (n, {', '.join(map(str, spec.image_shape))}) with n >= 1 for {name}")
    _check_labels(y, "y", len(x), spec.num_classes, source)
    if spec.coarse_class_names:
        derived = CIFAR100_FINE_TO_COARSE[y]
        if y_coarse is not None:
            y_coarse = np.asarray(y_coarse)
            _check_labels(y_coarse, "y_coarse", len(x), len(spec.coarse_class_names), source)
            if not np.array_equal(y_coarse, derived):
                raise ValueError(f"{source}: array 'y_coarse' disagrees with the CIFAR-100 "
                                 f"fine-to-coarse table at {np.sum(y_coarse != derived)} rows")
        y_coarse = derived
    elif y_coarse is not None:
        raise ValueError(f"{source}: array 'y_coarse' is only meaningful for cifar100, not {name}")
    return SplitArrays(x=x, y=y.astype(np.int64), y_coarse=y_coarse, ids=_ids(ids, split, len(x),
                                                                               source))


def _check_labels(labels: np.ndarray, array: str, n: int, num_classes: int, source: str) -> None:
    """Raise ValueError unless `labels` is n integers in [0, num_classes)."""
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: array {array!r} has shape {labels.shape} and dtype "
                         f"{labels.dtype}; expected integers of shape ({n},)")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{source}: array {array!r} has values in [{labels.min()}, "
                         f"{labels.max()}]; expected [0, {num_classes - 1}]")


def _ids(ids, split: str, n: int, source: str) -> tuple[str, ...]:
    """Example ids as strings: the given ones (bytes decoded) or '<split>_<row>'."""
    if ids is None:
        return tuple(f"{split}_{i:05d}" for i in range(n))
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise ValueError(f"{source}: array of ids ('filenames' in .npz files) has shape "
                         f"{ids.shape}; expected ({n},)")
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in ids.tolist())


def import_arrays(name: str, split: str, x, y, data_dir: str | os.PathLike | None = None, *,
                  y_coarse=None, ids=None, overwrite: bool = False) -> Path:
    """Store one split of `name` (x uint8 NHWC, y int labels) as a prepared TFDS dataset.

    Other splits already prepared are kept. Skips (and prints so) when the split is already
    prepared from the same arrays (sha256 of images, labels and ids), unless `overwrite`.
    Returns the dataset dir.
    """
    check_split_name(split)
    arrays = check_arrays(name, split, x, y, y_coarse, ids, source="import_arrays arguments")
    return _import_unless_done(name, {split: _arrays_digest(arrays)}, lambda: {split: arrays},
                               resolve_data_dir(data_dir), overwrite)


def import_npz(name: str, split: str, path: str | os.PathLike,
               data_dir: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
    """Like `import_arrays`, reading x, y (and optional y_coarse, filenames) from an .npz file.

    The skip compares the sha256 of the file, before its arrays are read.
    """
    check_split_name(split)
    _source_file(path, "data file")
    return _import_unless_done(name, {split: _file_digest(path)},
                               lambda: {split: read_npz(name, split, path)},
                               resolve_data_dir(data_dir), overwrite)


def import_shared(shared_data_dir: str | os.PathLike, names=None,
                  data_dir: str | os.PathLike | None = None, *,
                  overwrite: bool = False) -> dict[str, Path]:
    """Import the shared .npz files (see the dataset table) of `names` (default: all datasets).

    Each dataset's splits are written together. A dataset whose prepared splits were imported
    from these very files (same sha256) is skipped before its images are even read.
    """
    shared = Path(shared_data_dir).expanduser()
    if isinstance(names, str):
        names = [names]
    names = list(DATASETS) if names is None else [info(n).name for n in names]
    target = resolve_data_dir(data_dir)
    done = {}
    for name in names:
        spec = info(name)
        paths = {split: shared / file for split, file in spec.shared_files.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{name}: shared data file(s) not found: {missing}")
        sources = {split: _file_digest(path) for split, path in paths.items()}
        read = functools.partial(_read_shared, name, paths)
        done[name] = _import_unless_done(name, sources, read, target, overwrite)
    return done


def _read_shared(name: str, paths: dict[str, Path]) -> dict[str, SplitArrays]:
    """Read every split of `name` from its shared file, saying which splits are partial."""
    for split, note in info(name).shared_notes.items():
        print(f"{name}: the {split!r} split imported from {paths[split].name} is {note}")
    return {split: read_npz(name, split, path) for split, path in paths.items()}


def read_npz(name: str, split: str, path: str | os.PathLike) -> SplitArrays:
    """Read and check one split from an .npz holding x and y (optionally y_coarse, filenames)."""
    arrays = read_npz_arrays(path, ("x", "y"), ("y_coarse", "filenames"), what="data file")
    return check_arrays(name, split, arrays["x"], arrays["y"], arrays.get("y_coarse"),
                        arrays.get("filenames"), source=str(path))


def read_npz_arrays(path: str | os.PathLike, required, optional=(), *,
                    what: str = "file") -> dict[str, np.ndarray]:
    """{name: array} of the arrays `required` and of those in `optional` that the .npz file
    `path` has, read in full (a damaged member shows here, not later).

    ValueError naming `what` and the file if it is missing, is not an .npz archive (numpy
    itself would offer advice on pickles for a text file), cannot be read (damaged, or object
    arrays, which need pickle), or lacks a required array (the message lists those it has).
    """
    described = _source_file(path, what)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{described} is not an .npz archive (numpy.savez's format): it is "
                         f"truncated, or another kind of file.")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = list(arrays.files)
            found = {key: arrays[key] for key in (*required, *optional) if key in names}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{described} cannot be read as an .npz archive: {error}") from None
    absent = [key for key in required if key not in found]
    if absent:
        raise ValueError(f"{described} lacks the array(s) {absent}; it has {sorted(names)}.")
    return found


def _source_file(path: str | os.PathLike, what: str) -> str:
    """"<what> '<path>'" for messages, once `path` is known to be a file (else ValueError)."""
    described = f"{what} {os.fspath(path)!r}"
    if not os.path.isfile(path):
        problem = "is not a file" if os.path.exists(path) else "does not exist"
        raise ValueError(f"{described} {problem}.")
    return described


def _file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a source file's bytes (a fraction of a second for the shared files,
    where decompressing their arrays takes seconds)."""
    return f"file sha256:{checksums.sha256_of(path)}"


def _arrays_digest(arrays: SplitArrays) -> str:
    """The sha256 of one split's checked arrays: images, labels, superclasses and ids."""
    digest = hashlib.sha256(repr((arrays.x.shape, arrays.y.shape)).encode())
    for part in (arrays.x, arrays.y, arrays.y_coarse):
        if part is not None:
            digest.update(np.ascontiguousarray(part).tobytes())
    digest.update("\n".join(arrays.ids).encode())
    return f"arrays sha256:{digest.hexdigest()}"


def _recorded_sources(name: str, data_dir: Path) -> dict[str, str]:
    """{split: source digest} recorded when `name` was imported ({} if none was recorded).
    A damaged record counts as none, saying so: the record only lets an import be skipped,
    and the import it causes writes it anew."""
    path = prepared_dir(name, data_dir) / SOURCES_FILE
    if not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text())
        problem = None if isinstance(recorded, dict) else "not a JSON object"
    except ValueError as error:  # not UTF-8, or not JSON
        problem = f"not JSON: {error}"
    if problem is not None:
        print(f"{name}: {path} is damaged ({problem}); importing again")
        return {}
    return recorded


def _import_unless_done(name: str, sources: dict[str, str], read, data_dir: Path,
                        overwrite: bool) -> Path:
    """Write the splits `read()` returns (keeping the others), unless every split is prepared
    from the source with the digest in `sources` already (then print that it is skipped)."""
    prepared = prepared_counts(name, data_dir) or {}
    recorded = _recorded_sources(name, data_dir)
    if not overwrite and all(split in prepared and recorded.get(split) == source
                             for split, source in sources.items()):
        print(f"{name}: {', '.join(sources)} already prepared in {prepared_dir(name, data_dir)} "
              f"from the same source (sha256); skipped")
        return prepared_dir(name, data_dir)
    # Before the arrays are read (seconds, for the shared files).
    atomic.check_writable_folder(data_dir, "data_dir")
    splits = read()
    kept = [split for split in prepared if split not in splits]
    all_splits = {split: _read_prepared(name, split, data_dir) for split in kept} | splits
    all_sources = {split: recorded[split] for split in kept if split in recorded} | sources
    return _write(info(name), all_splits, all_sources, data_dir)


def _read_prepared(name: str, split: str, data_dir: Path) -> SplitArrays:
    """Read a prepared split back into arrays, so that it survives rewriting the dataset."""
    ds = tfds.load(info(name).tfds_name, split=split, data_dir=str(data_dir), download=False,
                   batch_size=-1)
    arrays = tfds.as_numpy(ds)
    return check_arrays(name, split, arrays["image"], arrays["label"],
                        arrays.get("coarse_label"), arrays.get("id"),
                        source=f"prepared split {split!r} of {name} in {data_dir}")


def _write(spec: DatasetSpec, splits: dict[str, SplitArrays], sources: dict[str, str],
           data_dir: Path) -> Path:
    """Store all `splits` (and the digests of their `sources`) in a temporary dir inside
    `data_dir`, then move the result into place.

    An interrupted import therefore leaves at most a hidden temporary directory, never a
    half-written dataset that `tfds.load` would pick up.
    """
    builder_cls = tfds.builder_cls(spec.tfds_name)
    if str(builder_cls.VERSION) != spec.tfds_version:
        raise RuntimeError(
            f"The installed tensorflow-datasets reads {spec.tfds_name} version "
            f"{builder_cls.VERSION}, but lru_keras writes {spec.tfds_version}; the data would "
            f"be invisible to tfds.load. Install the pinned tensorflow-datasets version.")
    print(f"{spec.name}: writing splits { {s: len(a.y) for s, a in splits.items()} } to "
          f"{prepared_dir(spec.name, data_dir)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    final = prepared_dir(spec.name, data_dir)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-import-", dir=data_dir) as tmp:
        real_info = builder_cls(data_dir=tmp).info  # fresh features, not a prepared dataset's
        features = _features(spec, real_info.features)
        # TFDS prints "Downloading and preparing dataset ..." and "... downloaded and prepared
        # to <the temporary dir>" on stdout: wrong here (nothing is downloaded), so not shown.
        with contextlib.redirect_stdout(io.StringIO()):
            tfds.dataset_builders.store_as_tfds_dataset(
                name=spec.tfds_name, version=spec.tfds_version, features=features,
                split_datasets={split: _examples(arrays, tuple(features.keys()))
                                for split, arrays in splits.items()},
                data_dir=tmp, homepage=real_info.homepage, citation=real_info.citation,
                description=f"{spec.name} imported offline from arrays by lru_keras.data.",
                disable_shuffling=True)  # keep the rows in the order they were given
        written = Path(tmp) / spec.tfds_name / spec.tfds_version
        (written / SOURCES_FILE).write_text(json.dumps(sources, indent=1, sort_keys=True) + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.replace(final, Path(tmp) / "replaced")  # deleted with the temporary dir
        os.replace(written, final)
    return final


def _features(spec: DatasetSpec, features):
    """The real builder's features with class names set, so that they are stored on disk.

    The CIFAR builders only learn their label names while downloading, so without this the
    prepared dataset would call its classes '0', '1', ...
    """
    features["label"].names = list(spec.class_names)
    if spec.coarse_class_names:
        features["coarse_label"].names = list(spec.coarse_class_names)
    return features


def _examples(arrays: SplitArrays, feature_keys: tuple[str, ...]):
    """Yield (key, example) pairs with exactly the real builder's features (`feature_keys`)."""
    for i in range(len(arrays.y)):
        fields = {"image": arrays.x[i], "label": arrays.y[i], "id": arrays.ids[i]}
        if arrays.y_coarse is not None:
            fields["coarse_label"] = arrays.y_coarse[i]
        yield i, {key: fields[key] for key in feature_keys}

