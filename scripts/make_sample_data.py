"""Make lru_keras/sample_data/cifar10_test_sample.npz: 50 real CIFAR-10 test images per class.

The images are chosen deterministically from ../shared/data/cifar10_test.npz: for each class
in label order, the first 50 indices of a permutation (numpy default_rng(0), one generator
used for all classes in turn) of that class's rows, kept in file order. The output records
the rows' `indices` into cifar10_test.npz and their original `filenames`.

Usage: python scripts/make_sample_data.py [--shared-data DIR] [--out FILE]
"""

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 50


def choose_indices(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """`per_class` row indices of every class, drawn by one seeded generator, sorted by class."""
    rng = np.random.default_rng(seed)
    chosen = [np.sort(rng.permutation(np.flatnonzero(y == label))[:per_class])
              for label in range(int(y.max()) + 1)]
    return np.concatenate(chosen)


def main() -> None:
    """Read the shared test set, pick the sample, write it compressed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path,
                        default=REPO / "lru_keras" / "sample_data" / "cifar10_test_sample.npz")
    args = parser.parse_args()
    with np.load(args.shared_data / "cifar10_test.npz") as test:
        x, y, filenames = test["x"], test["y"], test["filenames"]
    indices = choose_indices(y, PER_CLASS)
    np.savez_compressed(args.out, x=x[indices], y=y[indices], filenames=filenames[indices],
                        indices=indices.astype(np.int32))
    print(f"wrote {len(indices)} images ({PER_CLASS} per class) to {args.out}")


if __name__ == "__main__":
    main()
