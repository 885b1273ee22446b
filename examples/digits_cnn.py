"""Train a small convolutional network on scikit-learn's 8x8 handwritten digits (no download).

Prints training progress, then test accuracy (checked to be at least 97%), macro F1 and the
confusion matrix; saves the model, loads it back into a fresh network and checks that the
predictions match.

    pip install ".[examples]" && python examples/digits_cnn.py
"""

import argparse
import os
import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastnn
from fastnn import metrics, nn, optim
from fastnn.callbacks import LearningRateScheduler
from fastnn.optim.lr_scheduler import CosineAnnealingLR
from fastnn.training import Trainer, predicted_labels

MIN_ACCURACY = 0.97


def build_model() -> nn.Module:
    # 1x8x8 -> 16x8x8 -> 32x8x8 -> 32x4x4 -> 10
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout2d(0.1),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--save", default=os.path.join(tempfile.gettempdir(),
                                                       "fastnn_digits_cnn.safetensors"))
    args = parser.parse_args()

    digits = load_digits()
    # (N, 64) pixel intensities 0..16 -> (N, 1, 8, 8) images in 0..1
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=args.seed)
    # One mean and scale for all pixels, from the training set only.
    mean, std = float(x_train.mean()), float(x_train.std())
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    fastnn.manual_seed(args.seed)
    model = build_model()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, metrics=["accuracy"])
    started = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                          validation_split=0.1, verbose=args.verbose,
                          callbacks=[LearningRateScheduler(CosineAnnealingLR(optimizer,
                                                                             args.epochs))])
    elapsed = time.perf_counter() - started

    outputs = trainer.predict(x_test)
    labels = predicted_labels(outputs)
    accuracy = metrics.accuracy_score(y_test, labels)
    print(f"\ntrained {len(history.epoch)} epochs in {elapsed:.1f} s "
          f"({fastnn.get_num_threads()} threads, {model.num_parameters():,} parameters)")
    print(f"test accuracy : {accuracy:.4f}")
    print(f"test macro F1 : {metrics.f1_score(y_test, labels, average='macro'):.4f}")
    print("confusion matrix (rows: true digit, columns: predicted):")
    print(metrics.confusion_matrix(y_test, labels))

    fastnn.save(model, args.save)
    restored = build_model()
    restored.load_state_dict(fastnn.load(args.save))
    same = np.array_equal(Trainer(restored, nn.CrossEntropyLoss(), optimizer).predict(x_test),
                          outputs)
    print(f"saved to {args.save}; reloaded model gives identical predictions: {same}")
    if not same:
        raise SystemExit("reloaded model's predictions differ")
    if accuracy < MIN_ACCURACY:
        raise SystemExit(f"test accuracy {accuracy:.4f} is below {MIN_ACCURACY}")


if __name__ == "__main__":
    main()
