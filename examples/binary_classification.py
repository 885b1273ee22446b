"""Binary classification: malignant or benign, from scikit-learn's bundled breast-cancer data.

One output logit trained with BCEWithLogitsLoss; reports accuracy, F1, ROC-AUC and the
confusion matrix on a held-out test set.

    pip install ".[examples]" && python examples/binary_classification.py
"""

import argparse

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import fastnn
from fastnn import metrics, nn, optim
from fastnn.training import Trainer, predicted_labels, predicted_probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = parser.parse_args()

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=args.seed)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)

    fastnn.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 1))
    # The (N,) 0/1 labels go in as they are: fit() matches them to the (N, 1) logits.
    trainer = Trainer(model, nn.BCEWithLogitsLoss(),
                      optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                      metrics=["accuracy", "roc_auc"])
    trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_split=0.1,
                verbose=args.verbose)

    logits = trainer.predict(x_test)
    labels, scores = predicted_labels(logits), predicted_probabilities(logits)
    print(f"test accuracy: {metrics.accuracy(y_test, labels):.4f}")
    print(f"test F1      : {metrics.f1_score(y_test, labels):.4f}")
    print(f"test ROC-AUC : {metrics.roc_auc_score(y_test, scores):.4f}")
    print("confusion matrix (rows: true 0/1, columns: predicted 0/1):")
    print(metrics.confusion_matrix(y_test, labels))


if __name__ == "__main__":
    main()
