"""Regression: predict disease progression from scikit-learn's bundled diabetes data.

Trains an MLP with mean squared error and reports test MSE, MAE and R^2, next to a linear
baseline fitted by least squares.

    pip install ".[examples]" && python examples/regression.py
"""

import argparse

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import fastnn
from fastnn import metrics, nn, optim
from fastnn.callbacks import EarlyStopping
from fastnn.training import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args()

    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25,
                                                        random_state=args.seed)
    x_mean, x_std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = y_train.mean(), y_train.std()
    prepare = lambda a: ((a - x_mean) / x_std).astype(np.float32)  # noqa: E731
    x_train, x_test = prepare(x_train), prepare(x_test)
    t_train = ((y_train - y_mean) / y_std).astype(np.float32).reshape(-1, 1)

    fastnn.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(32, 1))
    trainer = Trainer(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=3e-3,
                                                       weight_decay=1e-3), metrics=["r2"])
    history = trainer.fit(x_train, t_train, epochs=args.epochs, batch_size=32,
                          validation_split=0.15, verbose=args.verbose,
                          callbacks=[EarlyStopping("val_loss", patience=20)])
    predicted = trainer.predict(x_test).reshape(-1) * y_std + y_mean

    design = np.hstack([x_train, np.ones((len(x_train), 1), np.float32)])
    coef, *_ = np.linalg.lstsq(design, y_train, rcond=None)
    baseline = np.hstack([x_test, np.ones((len(x_test), 1), np.float32)]) @ coef

    print(f"trained {len(history.epoch)} epochs")
    print(f"{'':16}{'MSE':>10}{'MAE':>8}{'R^2':>8}")
    for name, pred in (("fastnn MLP", predicted), ("least squares", baseline)):
        print(f"{name:16}{metrics.mean_squared_error(y_test, pred):10.1f}"
              f"{metrics.mean_absolute_error(y_test, pred):8.1f}"
              f"{metrics.r2_score(y_test, pred):8.3f}")


if __name__ == "__main__":
    main()
