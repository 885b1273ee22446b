"""Train a convolutional network (or, with --model mlp, an MLP) on MNIST from local IDX files.

The four standard files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, gzipped or not) must be in --data-dir.
With network access, fetch them once with:

    python -c "import fastnn; fastnn.datasets.download_mnist('data/mnist')"

Prints training progress, test accuracy, macro F1 and the confusion matrix; saves the model,
loads it back into a fresh network and checks that the predictions match.

    python examples/mnist_cnn.py --data-dir data/mnist
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import fastnn
from fastnn import datasets, metrics, nn, optim
from fastnn.training import Trainer, predicted_labels


def build_model(kind: str = "cnn") -> nn.Module:
    if kind == "mlp":
        # The 784-512-256-10 network of bench/mlp.py.
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512), nn.ReLU(),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 10),
        )
    # 1x28x28 -> 32x26x26 -> 32x13x13 -> 64x11x11 -> 64x5x5 -> 128 -> 10 (padding 0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def load(directory: str, train: bool, limit: int):
    """Images as float32 (N, 1, 28, 28) scaled to 0..1 and int64 labels, at most `limit`."""
    images, labels = datasets.load_mnist(directory, train=train)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return (images.astype(np.float32) / 255.0)[:, None], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("data", "mnist"),
                        help="directory holding the MNIST IDX files (default data/mnist)")
    parser.add_argument("--model", default="cnn", choices=("cnn", "mlp"),
                        help="a convolutional network (default) or a 784-512-256-10 MLP")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0,
                        help="use only the first N training and test images (0: all)")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit with an error if test accuracy ends below this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--save", default=os.path.join(tempfile.gettempdir(),
                                                       "fastnn_mnist_cnn.safetensors"))
    args = parser.parse_args()

    try:
        x_train, y_train = load(args.data_dir, True, args.limit)
        x_test, y_test = load(args.data_dir, False, args.limit)
    except FileNotFoundError as error:
        sys.exit(f"MNIST files not found: {error}\n\nPut the four IDX files in --data-dir "
                 f"(now {args.data_dir!r}), or download them once (needs network access):\n"
                 f"    python -c \"import fastnn; fastnn.datasets.download_mnist("
                 f"'{args.data_dir}')\"")
    # One mean and scale for all pixels, from the training set only.
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    print(f"MNIST: {len(x_train)} training and {len(x_test)} test images from {args.data_dir}")

    fastnn.manual_seed(args.seed)
    model = build_model(args.model)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, metrics=["accuracy"])
    started = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                          validation_data=(x_test, y_test), verbose=args.verbose)
    elapsed = time.perf_counter() - started

    outputs = trainer.predict(x_test)
    labels = predicted_labels(outputs)
    accuracy = metrics.accuracy_score(y_test, labels)
    seen = len(x_train) * len(history.epoch)
    print(f"\ntrained {len(history.epoch)} epochs in {elapsed:.1f} s ({seen / elapsed:,.0f} "
          f"samples/s with validation, {fastnn.get_num_threads()} threads)")
    print(f"test accuracy : {accuracy:.4f}")
    print(f"test macro F1 : {metrics.f1_score(y_test, labels, average='macro'):.4f}")
    print("confusion matrix (rows: true digit, columns: predicted):")
    print(metrics.confusion_matrix(y_test, labels, labels=np.arange(10)))

    fastnn.save(model, args.save)
    restored = build_model(args.model)
    restored.load_state_dict(fastnn.load(args.save))
    same = np.array_equal(Trainer(restored, nn.CrossEntropyLoss(), optimizer).predict(x_test),
                          outputs)
    print(f"saved to {args.save}; reloaded model gives identical predictions: {same}")
    if not same:
        sys.exit("reloaded model's predictions differ")
    if accuracy < args.min_accuracy:
        sys.exit(f"test accuracy {accuracy:.4f} is below {args.min_accuracy}")


if __name__ == "__main__":
    main()
