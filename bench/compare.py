"""fastnn against PyTorch and scikit-learn on small real tasks: same models, same start, same data.

For each task, fastnn and PyTorch train the same network from the same initial weights (fastnn's,
copied into the torch model), on the same data order (one seeded permutation per epoch, shared)
with the same optimizer and hyper-parameters. scikit-learn's MLPClassifier / MLPRegressor gets
the same architecture, solver, learning rate, batch size, epochs and data order (it is driven by
one `partial_fit` per epoch with shuffle=False on the shared permutation, L2 = 0); it cannot start
from fastnn's weights and uses its own Glorot initialisation.

Tasks (no download): scikit-learn's digits (MLP, and a small CNN on the 8x8 images),
breast cancer (binary MLP, standardised features), a synthetic regression (make_regression,
standardised target); MNIST MLP and CNN from IDX files when --mnist-dir is given.

Reported per task and framework: test accuracy, macro F1 and ROC-AUC (MSE and R^2 for
regression), training time (training steps only; the per-epoch validation pass is not timed),
inference latency at batch 1 (median over many single calls), peak resident memory of the
process, and each framework's time / memory divided by fastnn's. Every (task, framework) runs in
its own process (DESIGN.md, "Benchmark protocol"); rounds alternate the framework order and
ratios are medians of per-round ratios. Per-epoch training loss, validation loss and validation
metric are recorded for the plots (matplotlib, optional).

    python bench/compare.py                          # default run (about 4 minutes)
    python bench/compare.py --quick --out /tmp/cmp   # tiny smoke run
    python bench/compare.py --mnist-dir data/mnist --tasks mnist_mlp,mnist_cnn
    python bench/compare.py --replot bench/results/compare.json --out docs/images
"""


import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _protocol import (Impl, fastnn_env, machine_report, numpy_env,  # noqa: E402
                       peak_memory_mb, run_impl)

FRAMEWORKS = ("fastnn", "torch", "sklearn")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Task:
    """One comparison: data source, network and training settings.

    kind: "multiclass", "binary" or "regression". layers: the network as a list of
    (layer name, args) understood by both fastnn.nn and torch.nn.
    """

    name: str
    title: str
    data: str
    kind: str
    layers: List[Tuple[str, tuple]]
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    hidden: Tuple[int, ...] = ()  # for scikit-learn; empty: no scikit-learn equivalent
    image_shape: Optional[Tuple[int, int, int]] = None  # CNN input (C, H, W); None: flat
    quick_epochs: int = 2
    quick_samples: int = 400


def _mlp(sizes, out):
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [("Linear", (fan_in, fan_out)), ("ReLU", ())]
    return layers + [("Linear", (sizes[-1], out))]


DIGITS_CNN = [("Conv2d", (1, 16, 3, 1, 1)), ("BatchNorm2d", (16,)), ("ReLU", ()),
              ("Conv2d", (16, 32, 3, 1, 1)), ("BatchNorm2d", (32,)), ("ReLU", ()),
              ("MaxPool2d", (2,)), ("Flatten", ()), ("Linear", (32 * 4 * 4, 10))]
MNIST_CNN = [("Conv2d", (1, 32, 3)), ("ReLU", ()), ("MaxPool2d", (2,)),
             ("Conv2d", (32, 64, 3)), ("ReLU", ()), ("MaxPool2d", (2,)), ("Flatten", ()),
             ("Linear", (1600, 128)), ("ReLU", ()), ("Linear", (128, 10))]

TASKS = {
    "digits_mlp": Task("digits_mlp", "digits, MLP 64-128-64-10, Adam", "digits", "multiclass",
                       _mlp((64, 128, 64), 10), "adam", 1e-3, 32, 30, hidden=(128, 64)),
    "digits_cnn": Task("digits_cnn", "digits 8x8, CNN conv16-bn-conv32-bn-pool-fc, Adam",
                       "digits", "multiclass", DIGITS_CNN, "adam", 1e-3, 32, 12,
                       image_shape=(1, 8, 8)),
    "breast_cancer": Task("breast_cancer", "breast cancer, MLP 30-32-16-1, SGD momentum 0.9",
                          "breast_cancer", "binary", _mlp((30, 32, 16), 1), "sgd", 1e-2, 32,
                          40, momentum=0.9, hidden=(32, 16)),
    "regression": Task("regression", "make_regression, MLP 20-64-32-1, Adam", "regression",
                       "regression", _mlp((20, 64, 32), 1), "adam", 1e-3, 32, 40,
                       hidden=(64, 32)),
    "mnist_mlp": Task("mnist_mlp", "MNIST, MLP 784-256-128-10, Adam", "mnist", "multiclass",
                      _mlp((784, 256, 128), 10), "adam", 1e-3, 128, 5, hidden=(256, 128),
                      quick_epochs=1, quick_samples=2000),
    "mnist_cnn": Task("mnist_cnn", "MNIST, CNN conv32-pool-conv64-pool-fc128-fc10, Adam",
                      "mnist", "multiclass", MNIST_CNN, "adam", 1e-3, 64, 2,
                      image_shape=(1, 28, 28), quick_epochs=1, quick_samples=2000),
}
DEFAULT_TASKS = ("digits_mlp", "digits_cnn", "breast_cancer", "regression")
MNIST_TASKS = ("mnist_mlp", "mnist_cnn")


# --- data (prepared once in the parent, read by every child with numpy only) ------------------
def _split(x, y, seed, stratify):
    """60% train, 15% validation, 25% test."""
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y if stratify else None)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, random_state=seed + 1,
        stratify=y_rest if stratify else None)
    return x_train, y_train, x_val, y_val, x_test, y_test


def load_task_data(task: Task, seed: int, mnist_dir: Optional[str]):
    """(x_train, y_train, x_val, y_val, x_test, y_test), float32 inputs scaled with training
    statistics only; int64 class labels, or float32 targets for regression."""
    import numpy as np

    if task.data == "mnist":
        from fastnn.datasets import load_mnist

        if not mnist_dir:
            raise ValueError(f"task {task.name} needs --mnist-dir")
        x, y = load_mnist(mnist_dir, train=True)
        x_test, y_test = load_mnist(mnist_dir, train=False)
        n_val = max(1, len(x) // 12)
        x = x.reshape(len(x), -1).astype(np.float32) / 255.0
        x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255.0
        parts = [x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:], x_test, y_test]
        mean, std = float(parts[0].mean()), float(parts[0].std())
    else:
        from sklearn import datasets

        if task.data == "digits":
            bunch = datasets.load_digits()
            x, y = bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64)
        elif task.data == "breast_cancer":
            bunch = datasets.load_breast_cancer()
            x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
        elif task.data == "regression":
            x, y = datasets.make_regression(n_samples=3000, n_features=20, n_informative=12,
                                            noise=10.0, random_state=seed)
            x, y = x.astype(np.float32), y.astype(np.float32)
        else:
            raise ValueError(f"unknown data {task.data!r}")
        parts = list(_split(x, y, seed, stratify=task.kind != "regression"))
        if task.image_shape:  # one mean and scale for all pixels
            mean, std = float(parts[0].mean()), float(parts[0].std())
        else:
            mean, std = parts[0].mean(axis=0), parts[0].std(axis=0) + 1e-6
    for i in (0, 2, 4):
        parts[i] = ((parts[i] - mean) / std).astype(np.float32)
    if task.kind == "regression":
        y_mean, y_std = parts[1].mean(), parts[1].std()
        for i in (1, 3, 5):
            parts[i] = ((parts[i] - y_mean) / y_std).astype(np.float32)
    return parts


def subsample(parts, n_train: int, seed: int):
    """At most n_train training samples and n_train / 2 validation and test samples each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i, limit in ((0, n_train), (2, n_train // 2), (4, n_train // 2)):
        keep = np.sort(rng.permutation(len(parts[i]))[:limit])
        out += [parts[i][keep], parts[i + 1][keep]]
    return out


def build_model(nn, task: Task):
    """The task's network from a module namespace (fastnn.nn or torch.nn)."""
    return nn.Sequential(*[getattr(nn, name)(*args) for name, args in task.layers])


def prepare(task: Task, args, directory: str) -> str:
    """Writes the task's data, the shared per-epoch permutations and fastnn's initial weights
    to one .npz file and returns its path."""
    import numpy as np

    import fastnn
    from fastnn import nn

    parts = load_task_data(task, args.seed, args.mnist_dir)
    if args.quick:
        parts = subsample(parts, task.quick_samples, args.seed)
    if task.image_shape:
        for i in (0, 2, 4):
            parts[i] = parts[i].reshape((-1,) + tuple(task.image_shape))
    epochs = task.quick_epochs if args.quick else task.epochs
    rng = np.random.default_rng(args.seed)
    perms = np.stack([rng.permutation(len(parts[0])) for _ in range(epochs)])
    fastnn.manual_seed(args.seed)
    weights = build_model(nn, task).state_dict()
    path = os.path.join(directory, f"{task.name}.npz")
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    np.savez(path, perms=perms, **dict(zip(names, parts)),
             **{f"w:{k}": np.asarray(v) for k, v in weights.items()})
    return path


# --- numpy helpers shared by every child -------------------------------------------------------
def outputs_to_scores(logits, kind: str):
    """Class probabilities (N, C), positive-class probabilities (N,) or predictions (N,)."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    if kind == "multiclass":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    logits = logits.reshape(-1)
    return 1.0 / (1.0 + np.exp(-logits)) if kind == "binary" else logits


def loss_and_metric(scores, y, kind: str) -> Tuple[float, float]:
    """(loss, metric) of scores against y: cross-entropy and accuracy for classification,
    mean squared error and R^2 for regression."""
    import numpy as np

    y = np.asarray(y)
    if kind == "regression":
        y = y.reshape(-1).astype(np.float64)
        mse = float(np.mean((scores - y) ** 2))
        return mse, 1.0 - mse * len(y) / float(np.sum((y - y.mean()) ** 2))
    eps = 1e-12
    if kind == "binary":
        p = np.clip(scores, eps, 1 - eps)
        loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        return float(loss), float(np.mean((scores > 0.5) == (y == 1)))
    loss = -np.mean(np.log(np.clip(scores[np.arange(len(y)), y], eps, None)))
    return float(loss), float(np.mean(scores.argmax(axis=1) == y))




def _median_latency(call, inputs, calls: int) -> float:
    """Median seconds of call(one sample), cycling through `inputs`, after a short warm-up."""
    for i in range(min(10, calls)):
        call(inputs[i % len(inputs)][None])
    times = []
    for i in range(calls):
        sample = inputs[i % len(inputs)][None]
        started = time.perf_counter()
        call(sample)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


WARMUP_STEPS = 10


def _training_step(model, loss_fn, optimizer, x, y):
    """step(indices) -> loss: one PyTorch-style update on x[indices]; fastnn and PyTorch share
    the API, so one loop serves both (each in its own process)."""
    def step(idx):
        loss = loss_fn(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _warm_up(make_step, perms, batch: int) -> None:
    """A few training steps of a throwaway model (make_step() builds one and returns its step
    function): first-call costs (thread pools, allocator, kernel selection) stay out of the
    timed training without touching the model that is measured."""
    step = make_step()
    batches = max(1, len(perms[0]) // batch)
    for i in range(WARMUP_STEPS):
        start = (i % batches) * batch
        step(perms[0][start:start + batch])


def _train_epochs(step, predict, perms, batch: int, x_val, y_val, kind: str):
    """Runs the shared epochs: perms holds one index array per epoch. step(indices) trains on one
    batch and returns its mean loss; predict(x) gives raw outputs. Returns (seconds spent in
    training steps, per-epoch curves)."""
    curves = {"train_loss": [], "val_loss": [], "val_metric": []}
    seconds = 0.0
    for perm in perms:
        n = len(perm)
        total = 0.0
        started = time.perf_counter()
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            total += step(idx) * len(idx)
        seconds += time.perf_counter() - started
        curves["train_loss"].append(total / n)
        val_loss, val_metric = loss_and_metric(outputs_to_scores(predict(x_val), kind), y_val,
                                               kind)
        curves["val_loss"].append(val_loss)
        curves["val_metric"].append(val_metric)
    return seconds, curves


# --- the three implementations (each runs in its own process) ---------------------------------
def _finish(out_path, scores, seconds, latency, curves) -> float:
    """Writes the child's results next to out_path (scores as .npy, the rest as .json)."""
    import numpy as np

    np.save(out_path + ".npy", np.asarray(scores, dtype=np.float64))
    result = {"train_seconds": seconds, "latency_seconds": latency, "peak_mb": peak_memory_mb(),
              "curves": curves}
    with open(out_path + ".json", "w") as f:
        json.dump(result, f)
    return seconds


def run_fastnn(task: str, data_path: str, out_path: str, threads: int,
               latency_calls: int) -> float:
    import numpy as np

    import fastnn
    from fastnn import nn, optim

    fastnn.set_num_threads(threads)
    spec = TASKS[task]
    data = dict(np.load(data_path))
    weights = {k[2:]: v for k, v in data.items() if k.startswith("w:")}
    x, y = data["x_train"], data["y_train"]
    if spec.kind != "multiclass":
        y = y.astype(np.float32).reshape(-1, 1)
    loss_fn = {"multiclass": nn.CrossEntropyLoss, "binary": nn.BCEWithLogitsLoss,
               "regression": nn.MSELoss}[spec.kind]()

    def make_step(model=None):
        if model is None:
            model = build_model(nn, spec)
            model.load_state_dict(weights)
        if spec.optimizer == "adam":
            optimizer = optim.Adam(model.parameters(), lr=spec.lr)
        else:
            optimizer = optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)

        return _training_step(model, loss_fn, optimizer, x, y)

    def predict(inputs):
        model.eval()
        with fastnn.no_grad():
            out = model(inputs).numpy()
        model.train()
        return out

    _warm_up(make_step, data["perms"], spec.batch_size)
    model = build_model(nn, spec)
    model.load_state_dict(weights)
    seconds, curves = _train_epochs(make_step(model), predict, data["perms"], spec.batch_size,
                                    data["x_val"], data["y_val"], spec.kind)
    scores = outputs_to_scores(predict(data["x_test"]), spec.kind)
    model.eval()

    def infer(sample):
        with fastnn.no_grad():
            model(sample)

    latency = _median_latency(infer, data["x_test"], latency_calls)
    return _finish(out_path, scores, seconds, latency, curves)


def run_torch(task: str, data_path: str, out_path: str, threads: int,
              latency_calls: int) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    spec = TASKS[task]
    data = dict(np.load(data_path))
    weights = {k[2:]: torch.from_numpy(v) for k, v in data.items() if k.startswith("w:")}
    x = torch.from_numpy(data["x_train"])
    y_np = data["y_train"]
    if spec.kind != "multiclass":
        y_np = y_np.astype(np.float32).reshape(-1, 1)
    y = torch.from_numpy(y_np)
    perms = [torch.from_numpy(p) for p in data["perms"]]
    loss_fn = {"multiclass": torch.nn.CrossEntropyLoss, "binary": torch.nn.BCEWithLogitsLoss,
               "regression": torch.nn.MSELoss}[spec.kind]()

    def make_step(model=None):
        if model is None:
            model = build_model(torch.nn, spec)
            model.load_state_dict(weights, strict=True)
        if spec.optimizer == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)

        return _training_step(model, loss_fn, optimizer, x, y)

    def predict(inputs):
        model.eval()
        with torch.no_grad():
            out = model(torch.from_numpy(inputs)).numpy()
        model.train()
        return out

    _warm_up(make_step, perms, spec.batch_size)
    model = build_model(torch.nn, spec)
    model.load_state_dict(weights, strict=True)
    seconds, curves = _train_epochs(make_step(model), predict, perms, spec.batch_size,
                                    data["x_val"], data["y_val"], spec.kind)
    scores = outputs_to_scores(predict(data["x_test"]), spec.kind)
    model.eval()
    x_test = torch.from_numpy(data["x_test"])

    def infer(sample):
        with torch.no_grad():
            model(sample)

    latency = _median_latency(infer, x_test, latency_calls)
    return _finish(out_path, scores, seconds, latency, curves)


def run_sklearn(task: str, data_path: str, out_path: str, threads: int,
                latency_calls: int, seed: int = 0) -> float:
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    spec = TASKS[task]
    data = dict(np.load(data_path))
    epochs = len(data["perms"])
    # Early stopping, the tolerance test and L2 off; shuffling is ours (the shared permutation).
    common = dict(hidden_layer_sizes=spec.hidden, activation="relu", solver=spec.optimizer,
                  alpha=0.0, batch_size=spec.batch_size, learning_rate_init=spec.lr,
                  max_iter=epochs, shuffle=False, tol=0.0, n_iter_no_change=epochs + 1,
                  early_stopping=False, random_state=seed)
    if spec.optimizer == "sgd":
        common.update(learning_rate="constant", momentum=spec.momentum,
                      nesterovs_momentum=False)
    if spec.kind == "regression":
        model = MLPRegressor(**common)
    else:
        model = MLPClassifier(**common)
    x, y = data["x_train"], data["y_train"]
    classes = np.unique(y) if spec.kind != "regression" else None

    def predict(inputs):
        if spec.kind == "regression":
            return model.predict(inputs)
        proba = model.predict_proba(inputs)
        # Back to logits, so that outputs_to_scores gives these probabilities again.
        if spec.kind == "binary":
            p = np.clip(proba[:, 1], 1e-300, 1.0)
            return np.log(p) - np.log(np.clip(proba[:, 0], 1e-300, 1.0))
        return np.log(np.clip(proba, 1e-300, None))

    curves = {"train_loss": [], "val_loss": [], "val_metric": []}
    seconds = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Warm-up on a throwaway estimator, as for the other frameworks.
        warm = (MLPRegressor if spec.kind == "regression" else MLPClassifier)(**common)
        head = data["perms"][0][:WARMUP_STEPS * spec.batch_size]
        if classes is not None:
            warm.partial_fit(x[head], y[head], classes=classes)
        else:
            warm.partial_fit(x[head], y[head])
        for perm in data["perms"]:
            xb, yb = x[perm], y[perm]  # the epoch's order; gathered outside the timed call
            started = time.perf_counter()
            if classes is not None:
                model.partial_fit(xb, yb, classes=classes)
            else:
                model.partial_fit(xb, yb)
            seconds += time.perf_counter() - started
            # scikit-learn's regression loss is half the mean squared error.
            curves["train_loss"].append(model.loss_ * (2.0 if spec.kind == "regression" else 1))
            val_loss, val_metric = loss_and_metric(outputs_to_scores(predict(data["x_val"]),
                                                                     spec.kind),
                                                   data["y_val"], spec.kind)
            curves["val_loss"].append(val_loss)
            curves["val_metric"].append(val_metric)
    scores = outputs_to_scores(predict(data["x_test"]), spec.kind)
    infer = model.predict if spec.kind == "regression" else model.predict_proba
    latency = _median_latency(infer, data["x_test"], latency_calls)
    return _finish(out_path, scores, seconds, latency, curves)


# --- driver ----------------------------------------------------------------------------------
def available_frameworks(requested: List[str]) -> Tuple[List[str], List[str]]:
    """(frameworks to run, notes about the ones skipped)."""
    run, notes = [], []
    for name in requested:
        if name not in FRAMEWORKS:
            raise ValueError(f"unknown framework {name!r} (choose from {', '.join(FRAMEWORKS)})")
        module = {"fastnn": "fastnn", "torch": "torch", "sklearn": "sklearn"}[name]
        if name == "fastnn" or importlib.util.find_spec(module) is not None:
            run.append(name)
        else:
            notes.append(f"{name} is not installed: its rows are skipped")
    if "fastnn" not in run:
        raise ValueError("fastnn must be among the frameworks (every ratio is relative to it)")
    return run, notes


def test_metrics(scores, y, kind: str) -> Dict[str, float]:
    import numpy as np

    from fastnn import metrics

    if kind == "regression":
        return {"mse": metrics.mean_squared_error(y, scores), "r2": metrics.r2_score(y, scores)}
    labels = (scores > 0.5).astype(np.int64) if kind == "binary" else scores.argmax(axis=1)
    return {"accuracy": metrics.accuracy_score(y, labels),
            "macro_f1": metrics.f1_score(y, labels, average="macro"),
            "roc_auc": metrics.roc_auc_score(y, scores)}


def _predicted_labels(scores, kind):
    return (scores > 0.5).astype(int) if kind == "binary" else scores.argmax(axis=1)


def run_task(task: Task, frameworks: List[str], args, workdir: str, log) -> Dict[str, object]:
    """Every framework, `rounds` times, alternating the order; returns the task's results."""
    import numpy as np

    data_path = prepare(task, args, workdir)
    with np.load(data_path) as data:
        y_test = data["y_test"]
        sizes = {"train": int(len(data["y_train"])), "val": int(len(data["y_val"])),
                 "test": int(len(y_test)), "epochs": int(len(data["perms"]))}
    peers = [f for f in frameworks if f != "sklearn" or task.hidden]
    notes = []
    if "sklearn" in frameworks and not task.hidden:
        notes.append("scikit-learn has no convolutional networks: no sklearn row")
    runs: Dict[str, List[dict]] = {f: [] for f in peers}
    scores: Dict[str, list] = {f: [] for f in peers}
    for round_index in range(args.rounds):
        order = peers if round_index % 2 == 0 else peers[::-1]
        for name in order:
            out = os.path.join(workdir, f"{task.name}-{name}-{round_index}")
            kwargs = {"task": task.name, "data_path": data_path, "out_path": out,
                      "threads": args.threads, "latency_calls": args.latency_calls}
            env = numpy_env(args.threads) if name == "sklearn" else fastnn_env(args.threads)
            if name == "sklearn":
                kwargs["seed"] = args.seed
            run_impl(Impl(name, os.path.abspath(__file__), f"run_{name}", kwargs, **env))
            with open(out + ".json") as f:
                runs[name].append(json.load(f))
            scores[name].append(np.load(out + ".npy"))
            log(f"  {task.name} round {round_index + 1}/{args.rounds} {name}: "
                f"train {runs[name][-1]['train_seconds']:.2f} s")
    result = {"task": task.name, "title": task.title, "kind": task.kind, "sizes": sizes,
              "optimizer": task.optimizer, "lr": task.lr, "batch_size": task.batch_size,
              "notes": notes, "frameworks": {}}
    base = runs["fastnn"]
    for name in peers:
        r = runs[name]
        entry = {
            "metrics": test_metrics(scores[name][0], y_test, task.kind),
            # Same seeds, same data: every round must give the same outputs.
            "repeatable": all(np.array_equal(s, scores[name][0]) for s in scores[name][1:]),
            "train_seconds": statistics.median(x["train_seconds"] for x in r),
            "latency_seconds": statistics.median(x["latency_seconds"] for x in r),
            "peak_mb": statistics.median(x["peak_mb"] for x in r),
            "train_ratio": statistics.median(a["train_seconds"] / b["train_seconds"]
                                             for a, b in zip(r, base)),
            "latency_ratio": statistics.median(a["latency_seconds"] / b["latency_seconds"]
                                               for a, b in zip(r, base)),
            "memory_ratio": statistics.median(a["peak_mb"] / b["peak_mb"]
                                              for a, b in zip(r, base)),
            "curves": r[0]["curves"],
            "same_initial_weights": name != "sklearn",
        }
        if task.kind != "regression":
            entry["agreement_with_fastnn"] = float(np.mean(
                _predicted_labels(scores[name][0], task.kind)
                == _predicted_labels(scores["fastnn"][0], task.kind)))
        else:
            entry["max_abs_diff_from_fastnn"] = float(np.max(np.abs(scores[name][0]
                                                                    - scores["fastnn"][0])))
        result["frameworks"][name] = entry
    return result


def accuracy_checks(results: List[dict], tolerance_pp: float = 1.0) -> List[dict]:
    """fastnn's test accuracy must be within tolerance_pp points of PyTorch's on every
    classification task (for regression: R^2 within tolerance_pp / 100)."""
    checks = []
    for res in results:
        fw = res["frameworks"]
        if "torch" not in fw:
            continue
        key = "r2" if res["kind"] == "regression" else "accuracy"
        a, b = fw["fastnn"]["metrics"][key], fw["torch"]["metrics"][key]
        gap = abs(a - b) * 100.0
        checks.append({"task": res["task"], "metric": key, "fastnn": a, "torch": b,
                       "gap_points": gap, "ok": gap <= tolerance_pp})
    return checks


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def markdown_tables(results: List[dict], checks: List[dict]) -> str:
    lines = ["| task | framework | test accuracy | macro F1 | ROC-AUC | test MSE | test R² | "
             "same predictions as fastnn |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for name, e in res["frameworks"].items():
            m = e["metrics"]
            agree = e.get("agreement_with_fastnn")
            agree_text = "—" if name == "fastnn" else (
                f"{agree:.1%}" if agree is not None
                else f"max diff {e['max_abs_diff_from_fastnn']:.2g}")
            lines.append(
                f"| {res['task']} | {name} | {_fmt(m.get('accuracy'), '.4f')} | "
                f"{_fmt(m.get('macro_f1'), '.4f')} | {_fmt(m.get('roc_auc'), '.4f')} | "
                f"{_fmt(m.get('mse'), '.4f')} | {_fmt(m.get('r2'), '.4f')} | {agree_text} |")
    lines += ["", "| task | framework | train time | batch-1 latency | peak memory | "
              "train time / fastnn | latency / fastnn | memory / fastnn |",
              "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for name, e in res["frameworks"].items():
            ratios = ("—", "—", "—") if name == "fastnn" else (
                f"{e['train_ratio']:.2f}", f"{e['latency_ratio']:.2f}",
                f"{e['memory_ratio']:.2f}")
            lines.append(f"| {res['task']} | {name} | {e['train_seconds']:.2f} s | "
                         f"{e['latency_seconds'] * 1e6:.0f} µs | {e['peak_mb']:.0f} MB | "
                         + " | ".join(ratios) + " |")
    if checks:
        lines += ["", "| check: fastnn vs PyTorch at equal settings | metric | fastnn | torch | "
                  "gap (points) | within 1 point |", "|---|---|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c['task']} | {c['metric']} | {c['fastnn']:.4f} | {c['torch']:.4f}"
                         f" | {c['gap_points']:.2f} | {'yes' if c['ok'] else 'NO'} |")
    return "\n".join(lines)


# --- pictures ----------------------------------------------------------------------------------
COLORS = {"fastnn": "tab:blue", "torch": "tab:orange", "sklearn": "tab:green"}


def plot_results(results: List[dict], out_dir: str) -> Tuple[List[str], Optional[str]]:
    """Training curves per task and one bar chart of speed ratios; returns (files, note)."""
    if importlib.util.find_spec("matplotlib") is None:
        return [], "matplotlib is not installed: no pictures"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    files = []
    for res in results:
        fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.8))
        metric_name = "R²" if res["kind"] == "regression" else "accuracy"
        for name, e in res["frameworks"].items():
            c = e["curves"]
            epochs = range(1, len(c["train_loss"]) + 1)
            # fastnn wide and pale underneath, so that an identical PyTorch curve on top
            # leaves it visible.
            style = {"linewidth": 4, "alpha": 0.45} if name == "fastnn" else {"linewidth": 1.3}
            ax_loss.plot(epochs, c["train_loss"], color=COLORS[name], label=f"{name} train",
                         **style)
            ax_loss.plot(epochs, c["val_loss"], color=COLORS[name], linestyle="--",
                         label=f"{name} validation", **style)
            ax_metric.plot(epochs, c["val_metric"], color=COLORS[name], label=name, **style)
        ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
        ax_metric.set(xlabel="epoch", ylabel=metric_name, title=f"validation {metric_name}")
        for ax in (ax_loss, ax_metric):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_loss.legend(fontsize=8)
        ax_metric.legend(fontsize=8)
        fig.suptitle(res["title"], fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, f"compare_{res['task']}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    series = []
    for peer, label in (("torch", "PyTorch"), ("sklearn", "scikit-learn")):
        for key, what in (("train_ratio", "training time"), ("latency_ratio", "batch-1 latency")):
            values = [res["frameworks"].get(peer, {}).get(key) for res in results]
            if any(v is not None for v in values):
                series.append((f"{label} / fastnn, {what}", values))
    if series:
        import numpy as np

        fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(results)), 4.6))
        width = 0.8 / len(series)
        positions = np.arange(len(results))
        for i, (label, values) in enumerate(series):
            heights = [v if v is not None else 0 for v in values]
            bars = ax.bar(positions + (i - (len(series) - 1) / 2) * width, heights, width,
                          label=label)
            ax.bar_label(bars, labels=[f"{v:.1f}" if v else "" for v in values], fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(positions, [res["task"] for res in results])
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_ylabel("peer time / fastnn time (above 1: fastnn faster)", fontsize=9)
        ax.set_title("Time relative to fastnn (median of per-round ratios)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
        fig.tight_layout()
        path = os.path.join(out_dir, "compare_speed.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files, None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None,
                        help=f"comma-separated, from {', '.join(TASKS)} (default: "
                             f"{', '.join(DEFAULT_TASKS)}, plus the MNIST ones with --mnist-dir)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--mnist-dir", default=None, help="directory with the MNIST IDX files")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternated rounds per task (default 3)")
    # One thread by default: these networks are small, and on a shared machine the spinning
    # OpenMP workers of either library made 2-thread runs 5 to 20 times slower.
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per framework (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-calls", type=int, default=300,
                        help="single-sample inference calls timed (median)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run: few samples, 1-2 epochs, 1 round, 30 latency calls")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="directory for compare.json, compare.md and the PNGs")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--replot", metavar="COMPARE_JSON", default=None,
                        help="only redraw the pictures of an earlier run's compare.json into "
                             "--out (e.g. docs/images)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            previous = json.load(f)
        os.makedirs(args.out, exist_ok=True)
        images, note = plot_results(previous["tasks"], args.out)
        print(note or "wrote " + ", ".join(images))
        return 0 if images else 1
    if args.quick:
        args.rounds, args.latency_calls = 1, min(args.latency_calls, 30)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    if args.tasks:
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    else:
        names = list(DEFAULT_TASKS) + (list(MNIST_TASKS) if args.mnist_dir else [])
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    frameworks, notes = available_frameworks(
        [f.strip() for f in args.frameworks.split(",") if f.strip()])
    if importlib.util.find_spec("sklearn") is None:
        # The non-MNIST tasks take their data from scikit-learn.
        dropped = [n for n in names if TASKS[n].data != "mnist"]
        names = [n for n in names if TASKS[n].data == "mnist"]
        if dropped:
            notes.append(f"scikit-learn is not installed: tasks {', '.join(dropped)} "
                         "(their data comes from it) are skipped")
    for n in names:
        if TASKS[n].data == "mnist" and not args.mnist_dir:
            parser.error(f"task {n} needs --mnist-dir")
    if "sklearn" in frameworks:
        notes.append("scikit-learn cannot start from fastnn's initial weights: it uses its own "
                     "(Glorot) initialisation, with the same data order and settings")

    def log(message):
        if args.verbose:
            print(message, file=sys.stderr, flush=True)

    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="fastnn-compare-") as workdir:
        for name in names:
            results.append(run_task(TASKS[name], frameworks, args, workdir, log))
    checks = accuracy_checks(results)
    images, plot_note = ([], "plots switched off") if args.no_plots else plot_results(
        results, args.out)
    if plot_note:
        notes.append(plot_note)
    for res in results:
        notes += [f"{res['task']}: {n}" for n in res["notes"]]
        notes += [f"{res['task']}: {name} gave different outputs in different rounds"
                  for name, e in res["frameworks"].items() if not e["repeatable"]]

    machine = machine_report([args.threads])
    tables = markdown_tables(results, checks)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    settings = (f"- {args.rounds} round(s), framework order alternated, ratios are medians of "
                f"per-round ratios; seed {args.seed}; {args.latency_calls} batch-1 calls"
                + (" (quick run)" if args.quick else "")
                + f"; load average at the end {load} (other work on the machine)")
    try:
        settings += f"\n- scikit-learn {metadata.version('scikit-learn')}"
    except metadata.PackageNotFoundError:
        pass
    task_lines = [f"- {r['task']}: {r['title']}, lr {r['lr']:g}, batch {r['batch_size']}, "
                  f"{r['sizes']['epochs']} epochs, {r['sizes']['train']} train / "
                  f"{r['sizes']['val']} validation / {r['sizes']['test']} test samples"
                  for r in results]
    text = "\n".join([machine, settings] + task_lines + [""] + [tables] + [""]
                     + [f"- note: {n}" for n in notes])
    print(text, flush=True)
    report = {"machine": machine, "threads": args.threads, "rounds": args.rounds,
              "seed": args.seed, "quick": args.quick, "frameworks": frameworks,
              "tasks": results, "checks": checks, "notes": notes,
              "images": [os.path.basename(p) for p in images],
              "seconds": time.perf_counter() - started,
              "task_settings": {n: asdict(TASKS[n]) for n in names}}
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(text + "\n")
    print(f"\nwrote {os.path.join(args.out, 'compare.json')}, compare.md"
          + (f" and {len(images)} PNGs" if images else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
