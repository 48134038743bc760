"""`python -m lru_keras.demo` (`make demo`): the published 14-LruNet-1x, ported, at work.

Loads `LruNet(reuse=14, width=1.0, weights="cifar10")`, prints its card (counts as the paper
counts, the accuracy recorded with the weights, source and license), classifies the 500
CIFAR-10 test images bundled with the package, and evaluates the full CIFAR-10 test set if it
has been imported into TFDS (else prints how to import it). Needs no network and no dataset.
"""

import numpy as np

from lru_keras import analysis, data, evaluate
from lru_keras.zoo import LruNet, get_weights
from lru_keras.zoo.weights import weights_dir

WEIGHTS = "lrunet14_1x.cifar10"
SHOWN_PREDICTIONS = 8


def main():
    entry = get_weights(WEIGHTS)
    model = LruNet(reuse=14, width=1.0, weights="cifar10")
    print_card(model, entry)
    classify_sample(model)
    evaluate_test_set(model, entry)


def print_card(model, entry):
    """What the model is, how big, how good (as published), and where it comes from."""
    counts = analysis.summary(model)
    print(f"{WEIGHTS}: {entry.describe()} with weights={entry.dataset!r}")
    print(f"  params       {counts['trainable_params']:,} trainable "
          f"(conv params {counts['conv_params']:,}; the paper: 206k / 125k)")
    print(f"  MFLOPs       {counts['mflops']:.2f}  ({analysis.MFLOPS_CONVENTION})")
    print(f"  accuracy     {entry.accuracy:.2f}% on the CIFAR-10 test set, recorded with the "
          f"published weights")
    print(f"  source       {entry.source}")
    print(f"  license      MIT, Copyright (c) 2017 Okan Köpüklü ({weights_dir() / 'LICENSE'})")
    print()


def classify_sample(model):
    """Accuracy on the bundled sample, then a few predictions against the true labels."""
    result = evaluate.evaluate_sample(model, model_name=WEIGHTS)
    print("Measured on the bundled 500-image sample of the CIFAR-10 test set (50 per class), "
          "not the full test set:")
    print(f"  {evaluate.format_result(result)}")
    images, labels = data.load_sample()
    names = data.class_names("cifar10")
    picked = np.linspace(0, len(labels) - 1, SHOWN_PREDICTIONS).astype(int)
    probabilities = model.predict(images[picked].astype("float32"), verbose=0)
    rows = []
    for index, p in zip(picked, probabilities):
        guess = int(np.argmax(p))
        rows.append([index, names[labels[index]], names[guess], f"{100 * p[guess]:.1f}%",
                     "yes" if guess == labels[index] else "NO"])
    print(analysis.format_table(["image", "true label", "predicted", "confidence", "right"],
                                rows, align_right=(0, 3)))
    print()


def evaluate_test_set(model, entry):
    """The full CIFAR-10 test set if it is prepared in TFDS, else the commands to get there."""
    counts = data.prepared_counts("cifar10") or {}
    if "test" not in counts:
        print(f"The full CIFAR-10 test set is not imported into TFDS "
              f"(data dir {data.resolve_data_dir(None)}). To import it offline and evaluate:")
        print("  make data      # or: lru-keras data import --from-shared ../shared/data")
        print(f"  lru-keras evaluate --weights {WEIGHTS} --dataset cifar10")
        return
    print(f"CIFAR-10 test split as imported into TFDS ({counts['test']:,} images):")
    result = evaluate.evaluate_dataset(model, "cifar10", "test", model_name=WEIGHTS)
    print(f"  {evaluate.format_result(result)} (recorded with the weights: "
          f"{entry.accuracy:.2f}%), {result['images_per_second']:.0f} images/s")


if __name__ == "__main__":
    main()
