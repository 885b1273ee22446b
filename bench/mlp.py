"""MLP benchmark: fastnn against PyTorch and a plain numpy loop, following the DESIGN protocol.

The network is 784-512-256-10 with ReLU, trained with SGD (momentum 0.9) on softmax
cross-entropy. Every implementation starts from the same weights and data; before timing, each
checks that three training steps reproduce a float64 numpy reference. Reported: training
throughput at batch 1, 32, 128 and 512, inference throughput at batch 1 and 128 (samples/s), and
peak resident memory after training. Each implementation runs in its own process; they are
alternated (fastnn, torch, numpy, fastnn, ...) and the medians of the per-round ratios are shown.

    python bench/mlp.py                  # full table (several minutes)
    python bench/mlp.py --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _protocol import (add_row_options, framework_peers,  # noqa: E402
                       machine_report, median_ratio, peak_memory_mb,
                       print_row_table, time_steps)

SIZES = (784, 512, 256, 10)
LR, MOMENTUM = 0.01, 0.9
POOL = 2048  # distinct samples cycled through while timing


def make_data(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((POOL, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], POOL).astype(np.int64)
    return x, y


def initial_weights(seed: int = 1):
    """(weight (out, in), bias (out,)) per layer, PyTorch's default initialisation ranges."""
    import numpy as np

    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        layers.append((rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32),
                       rng.uniform(-bound, bound, fan_out).astype(np.float32)))
    return layers


def reference_after_steps(steps: int, batch: int):
    """First-layer weight after `steps` SGD steps, in float64 numpy (the check's reference)."""
    import numpy as np

    x, y = make_data()
    params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in initial_weights()]
    velocity = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params]
    for step in range(steps):
        xb, yb = x[step * batch:(step + 1) * batch].astype(np.float64), y[step * batch:
                                                                          (step + 1) * batch]
        grads = numpy_mlp_grads(params, xb, yb)
        for i, ((w, b), (gw, gb)) in enumerate(zip(params, grads)):
            vw, vb = velocity[i]
            if step == 0:
                vw[...], vb[...] = gw, gb
            else:
                vw *= MOMENTUM
                vw += gw
                vb *= MOMENTUM
                vb += gb
            w -= LR * vw
            b -= LR * vb
    return params[0][0]


def numpy_mlp_grads(params, xb, yb):
    """Gradients of mean cross-entropy for the ReLU MLP, by hand, in the arrays' dtype."""
    import numpy as np

    activations = [xb]
    h = xb
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = np.maximum(h, 0)
        activations.append(h)
    logits = activations[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    grad = probs
    grad[np.arange(len(yb)), yb] -= 1
    grad /= len(yb)
    grads = [None] * len(params)
    for i in range(len(params) - 1, -1, -1):
        w, _ = params[i]
        grads[i] = (grad.T @ activations[i], grad.sum(axis=0))
        if i:
            grad = (grad @ w) * (activations[i] > 0)
    return grads


def check_first_layer(weight, who: str) -> None:
    import numpy as np

    expected = reference_after_steps(3, 32)
    error = float(np.max(np.abs(weight - expected)))
    if not error < 1e-4:
        raise AssertionError(f"{who}: weights after 3 steps differ from the float64 reference by "
                             f"{error:.3g}")


# --- implementations (each runs in its own process) --------------------------------------------
def run_fastnn(mode: str, batch: int, threads: int, min_time: float) -> float:
    import numpy as np

    import fastnn
    from fastnn import nn, optim

    fastnn.set_num_threads(threads)
    x, y = make_data()
    layers = [nn.Linear(i, o) for i, o in zip(SIZES[:-1], SIZES[1:])]
    for layer, (w, b) in zip(layers, initial_weights()):
        layer.weight.data[...] = w
        layer.bias.data[...] = b
    model = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def train(i, size):
        loss = loss_fn(model(x[i * size:(i + 1) * size]), y[i * size:(i + 1) * size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for i in range(3):
        train(i, 32)
    check_first_layer(layers[0].weight.data, "fastnn")
    if mode == "train":
        return time_steps(lambda i: train(i, batch), POOL // batch, batch, min_time)
    if mode == "infer":
        model.eval()

        def infer(i):
            with fastnn.no_grad():
                model(x[i * batch:(i + 1) * batch])

        return time_steps(infer, POOL // batch, batch, min_time)
    time_steps(lambda i: train(i, 128), POOL // 128, 128, min_time)
    del np
    return peak_memory_mb()


def run_torch(mode: str, batch: int, threads: int, min_time: float) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    x_np, y_np = make_data()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    layers = [torch.nn.Linear(i, o) for i, o in zip(SIZES[:-1], SIZES[1:])]
    with torch.no_grad():
        for layer, (w, b) in zip(layers, initial_weights()):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(),
                                layers[2])
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def train(i, size):
        loss = loss_fn(model(x[i * size:(i + 1) * size]), y[i * size:(i + 1) * size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for i in range(3):
        train(i, 32)
    check_first_layer(layers[0].weight.detach().numpy(), "torch")
    if mode == "train":
        return time_steps(lambda i: train(i, batch), POOL // batch, batch, min_time)
    if mode == "infer":
        model.eval()

        def infer(i):
            with torch.no_grad():
                model(x[i * batch:(i + 1) * batch])

        return time_steps(infer, POOL // batch, batch, min_time)
    time_steps(lambda i: train(i, 128), POOL // 128, 128, min_time)
    del np
    return peak_memory_mb()


def run_numpy(mode: str, batch: int, threads: int, min_time: float) -> float:
    import numpy as np

    x, y = make_data()
    params = [(w.copy(), b.copy()) for w, b in initial_weights()]
    velocity = [(np.zeros_like(w), np.zeros_like(b)) for w, b in params]
    first = [True]

    def train(i, size):
        grads = numpy_mlp_grads(params, x[i * size:(i + 1) * size], y[i * size:(i + 1) * size])
        for (w, b), (vw, vb), (gw, gb) in zip(params, velocity, grads):
            if first[0]:
                vw[...], vb[...] = gw, gb
            else:
                vw *= MOMENTUM
                vw += gw
                vb *= MOMENTUM
                vb += gb
            w -= LR * vw
            b -= LR * vb
        first[0] = False

    for i in range(3):
        train(i, 32)
    check_first_layer(params[0][0], "numpy")
    if mode == "train":
        return time_steps(lambda i: train(i, batch), POOL // batch, batch, min_time)
    if mode == "infer":
        def infer(i):
            h = x[i * batch:(i + 1) * batch]
            for j, (w, b) in enumerate(params):
                h = h @ w.T + b
                if j < len(params) - 1:
                    h = np.maximum(h, 0)

        return time_steps(infer, POOL // batch, batch, min_time)
    time_steps(lambda i: train(i, 128), POOL // 128, 128, min_time)
    return peak_memory_mb()


# --- driver ----------------------------------------------------------------------------------
ROWS = [("train", 1), ("train", 32), ("train", 128), ("train", 512), ("infer", 1),
        ("infer", 128), ("memory", 128)]


def describe_row(mode, values, names):
    medians = {n: statistics.median(v) for n, v in values.items()}
    if mode == "memory":
        # Lower is better for memory, so the ratio is inverted: peer's memory / fastnn's.
        return ("peak memory (train)", [f"{medians[n]:.0f} MB" for n in names],
                [f"{median_ratio(values, n, 'fastnn'):.2f} ({n} / fastnn)" for n in names[1:]])
    return ("train" if mode == "train" else "inference",
            [f"{medians[n]:,.0f}/s" for n in names],
            [f"{median_ratio(values, 'fastnn', n):.2f}" for n in names[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_row_options(parser, ROWS, "train, infer, memory")
    args = parser.parse_args()
    peers = framework_peers(args.threads, with_numpy=True)
    print(machine_report([args.threads]))
    print(f"- network 784-512-256-10 ReLU, SGD momentum {MOMENTUM}, cross-entropy, float32; "
          f"{args.rounds} alternated rounds per row\n")
    print_row_table(os.path.abspath(__file__), peers, args, describe_row)


if __name__ == "__main__":
    main()
