"""Train a small network on scikit-learn's bundled handwritten digits (no download needed).

Prints training progress, then test accuracy, macro F1, ROC-AUC and the confusion matrix;
saves the model, loads it back into a fresh network and checks the predictions match.

    pip install ".[examples]" && python examples/digits.py
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
from fastnn.callbacks import EarlyStopping
from fastnn.training import Trainer, predicted_labels, predicted_probabilities


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--save", default=os.path.join(tempfile.gettempdir(),
                                                       "fastnn_digits.safetensors"))
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=args.seed)
    # Standardise with the training set's statistics only.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    fastnn.manual_seed(args.seed)
    model = build_model()
    trainer = Trainer(model, nn.CrossEntropyLoss(),
                      optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4),
                      metrics=["accuracy"])
    started = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                          validation_split=0.1, verbose=args.verbose,
                          callbacks=[EarlyStopping("val_loss", patience=8)])
    elapsed = time.perf_counter() - started

    outputs = trainer.predict(x_test)
    labels = predicted_labels(outputs)
    probabilities = predicted_probabilities(outputs)
    print(f"\ntrained {len(history.epoch)} epochs in {elapsed:.1f} s "
          f"({fastnn.get_num_threads()} threads)")
    print(f"test accuracy : {metrics.accuracy_score(y_test, labels):.4f}")
    print(f"test macro F1 : {metrics.f1_score(y_test, labels, average='macro'):.4f}")
    print(f"test ROC-AUC  : {metrics.roc_auc_score(y_test, probabilities):.4f}")
    print("confusion matrix (rows: true digit, columns: predicted):")
    print(metrics.confusion_matrix(y_test, labels))

    fastnn.save(model, args.save)
    restored = build_model()
    restored.load_state_dict(fastnn.load(args.save))
    same = np.array_equal(Trainer(restored, nn.CrossEntropyLoss(), trainer.optimizer)
                          .predict(x_test), outputs)
    print(f"saved to {args.save}; reloaded model gives identical predictions: {same}")
    if not same:
        raise SystemExit("reloaded model's predictions differ")


if __name__ == "__main__":
    main()
