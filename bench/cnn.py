"""CNN benchmark: fastnn against PyTorch, following the DESIGN protocol.

The network is conv3x3(1->32)-relu-maxpool2-conv3x3(32->64)-relu-maxpool2-flatten-
linear(1600->128)-relu-linear(10) on 1x28x28 inputs, with padding 0 in both convolutions,
trained with Adam (lr 1e-3) on softmax cross-entropy. Both implementations start from the same
weights and data; before timing, each checks that the loss after two Adam steps matches a float64
numpy reference. Reported: training throughput at batch 64, inference throughput at batch 1 and
64 (samples/s), and the forward / backward time of each convolution at batch 64 (ms, kernel
calls without autograd). Each implementation runs in its own process; they are alternated
(fastnn, torch, fastnn, ...) and the medians of the per-round ratios are shown.

    python bench/cnn.py                  # full table (several minutes)
    python bench/cnn.py --rounds 3 --threads 1 --rows train:64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _protocol import (add_row_options, framework_peers,  # noqa: E402
                       machine_report, median_ratio, print_row_table, time_steps)

LR = 1e-3
POOL = 2048  # distinct samples cycled through while timing
CHECK_BATCH = 16
# (name, input shape at batch 64, weight shape) of the two convolutions.
CONVS = {"conv1": ((64, 1, 28, 28), (32, 1, 3, 3)), "conv2": ((64, 32, 13, 13), (64, 32, 3, 3))}


def make_data(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((POOL, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, POOL).astype(np.int64)
    return x, y


def initial_weights(seed: int = 1):
    """Name -> array in PyTorch's state_dict order and default initialisation ranges."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shapes = [("0", (32, 1, 3, 3)), ("3", (64, 32, 3, 3)), ("7", (128, 1600)), ("9", (10, 128))]
    weights = {}
    for name, shape in shapes:
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        weights[f"{name}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        weights[f"{name}.bias"] = rng.uniform(-bound, bound, shape[0]).astype(np.float32)
    return weights


# --- float64 numpy reference (the check) -------------------------------------------------------
def _conv_forward(x, w, b):
    import numpy as np

    cols = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", cols, w, optimize=True) + b[None, :, None, None], cols


def _conv_backward(dy, cols, w, need_dx):
    import numpy as np

    dw = np.einsum("nohw,nchwij->ocij", dy, cols, optimize=True)
    db = dy.sum(axis=(0, 2, 3))
    dx = None
    if need_dx:
        k = w.shape[2]
        padded = np.pad(dy, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
        dx = np.einsum("nohwij,ocij->nchw", windows, w[:, :, ::-1, ::-1], optimize=True)
    return dx, dw, db


def _pool_forward(x):
    n, c, h, w = x.shape
    cropped = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    y = cropped.max(axis=(3, 5))
    return y, cropped == y[:, :, :, None, :, None]


def _pool_backward(dy, mask, shape):
    import numpy as np

    dx = np.zeros(shape)
    n, c, oh, _, ow, _ = mask.shape
    dx[:, :, :oh * 2, :ow * 2] = (mask * dy[:, :, :, None, :, None]).reshape(n, c, oh * 2,
                                                                            ow * 2)
    return dx


def reference_loss_after_steps(steps: int = 2):
    """Mean cross-entropy on batch `steps` after `steps` Adam steps, in float64."""
    import numpy as np

    x, y = make_data()
    p = {k: v.astype(np.float64) for k, v in initial_weights().items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for step in range(steps + 1):
        xb = x[step * CHECK_BATCH:(step + 1) * CHECK_BATCH].astype(np.float64)
        yb = y[step * CHECK_BATCH:(step + 1) * CHECK_BATCH]
        z1, cols1 = _conv_forward(xb, p["0.weight"], p["0.bias"])
        a1 = np.maximum(z1, 0)
        h1, mask1 = _pool_forward(a1)
        z2, cols2 = _conv_forward(h1, p["3.weight"], p["3.bias"])
        a2 = np.maximum(z2, 0)
        h2, mask2 = _pool_forward(a2)
        f = h2.reshape(len(xb), -1)
        z3 = f @ p["7.weight"].T + p["7.bias"]
        a3 = np.maximum(z3, 0)
        logits = a3 @ p["9.weight"].T + p["9.bias"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -logp[np.arange(len(yb)), yb].mean()
        if step == steps:
            return float(loss)
        g = np.exp(logp)
        g[np.arange(len(yb)), yb] -= 1
        g /= len(yb)
        grads = {"9.weight": g.T @ a3, "9.bias": g.sum(0)}
        g = (g @ p["9.weight"]) * (z3 > 0)
        grads["7.weight"], grads["7.bias"] = g.T @ f, g.sum(0)
        g = (g @ p["7.weight"]).reshape(h2.shape)
        g = _pool_backward(g, mask2, a2.shape) * (z2 > 0)
        g, grads["3.weight"], grads["3.bias"] = _conv_backward(g, cols2, p["3.weight"], True)
        g = _pool_backward(g, mask1, a1.shape) * (z1 > 0)
        _, grads["0.weight"], grads["0.bias"] = _conv_backward(g, cols1, p["0.weight"], False)
        t = step + 1
        for k in p:
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v2[k] = 0.999 * v2[k] + 0.001 * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - 0.9 ** t), v2[k] / (1 - 0.999 ** t)
            p[k] -= LR * m_hat / (np.sqrt(v_hat) + 1e-8)
    raise AssertionError("unreachable")


def check_loss(loss: float, who: str) -> None:
    expected = reference_loss_after_steps(2)
    if not abs(loss - expected) <= 1e-4 * max(1.0, abs(expected)):
        raise AssertionError(f"{who}: loss after 2 Adam steps is {loss:.7f}, the float64 "
                             f"reference is {expected:.7f}")




def _time_calls(fn, min_time: float) -> float:
    """Calls per second of fn()."""
    from _protocol import measure

    return 1.0 / measure(fn, min_time=min_time)


def _conv_data(name):
    import numpy as np

    x_shape, w_shape = CONVS[name]
    rng = np.random.default_rng(2)
    return (rng.standard_normal(x_shape).astype(np.float32),
            rng.standard_normal(w_shape).astype(np.float32) * 0.1,
            rng.standard_normal(w_shape[0]).astype(np.float32))


# --- implementations (each runs in its own process) --------------------------------------------
def build_fastnn():
    """The network with each ReLU after a convolution fused into the conv kernel."""
    from fastnn import nn

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, activation="relu"), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, activation="relu"), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    # torch's names (0, 3, 7, 9) -> this model's (0, 2, 5, 7)
    renamed = {"0": "0", "3": "2", "7": "5", "9": "7"}
    model.load_state_dict({f"{renamed[k.split('.')[0]]}.{k.split('.')[1]}": v
                           for k, v in initial_weights().items()})
    return model


def run_fastnn(mode: str, batch: int, threads: int, min_time: float) -> float:
    import numpy as np

    import fastnn
    from fastnn import _ops, nn, optim

    fastnn.set_num_threads(threads)
    if mode.startswith("conv"):
        name, direction = mode.split("_")
        x, w, b = _conv_data(name)
        y = np.empty(_ops.conv2d_output_shape(x.shape, w.shape), dtype=np.float32)
        if direction == "fwd":
            return _time_calls(lambda: _ops.conv2d_forward(y, x, w, b), min_time)
        dy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
        dx = np.empty_like(x) if name != "conv1" else None  # conv1 is the first layer
        dw, db = np.empty_like(w), np.empty_like(b)
        return _time_calls(lambda: _ops.conv2d_backward(dy, x, w, dX=dx, dW=dw, db=db,
                                                    accumulate=False),
                           min_time)

    x, y = make_data()
    model = build_fastnn()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=LR)

    def train(i, size):
        loss = loss_fn(model(x[i * size:(i + 1) * size]), y[i * size:(i + 1) * size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    for i in range(2):
        train(i, CHECK_BATCH)
    with fastnn.no_grad():
        loss = loss_fn(model(x[2 * CHECK_BATCH:3 * CHECK_BATCH]), y[2 * CHECK_BATCH:
                                                                    3 * CHECK_BATCH])
    check_loss(loss.item(), "fastnn")
    if mode == "train":
        return time_steps(lambda i: train(i, batch), POOL // batch, batch, min_time)
    model.eval()

    def infer(i):
        with fastnn.no_grad():
            model(x[i * batch:(i + 1) * batch])

    return time_steps(infer, POOL // batch, batch, min_time)


def run_torch(mode: str, batch: int, threads: int, min_time: float) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    if mode.startswith("conv"):
        name, direction = mode.split("_")
        x, w, b = (torch.from_numpy(a) for a in _conv_data(name))
        conv = torch.nn.functional.conv2d
        if direction == "fwd":
            def forward():
                with torch.no_grad():
                    conv(x, w, b)

            return _time_calls(forward, min_time)
        with torch.no_grad():
            shape = conv(x, w, b).shape
        dy = torch.from_numpy(np.random.default_rng(3).standard_normal(shape).astype(np.float32))
        need_dx = name != "conv1"
        backward = torch.ops.aten.convolution_backward

        def run_backward():
            backward(dy, x, w, [w.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                     [need_dx, True, True])

        return _time_calls(run_backward, min_time)

    x_np, y_np = make_data()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    tn = torch.nn
    model = tn.Sequential(
        tn.Conv2d(1, 32, 3), tn.ReLU(), tn.MaxPool2d(2),
        tn.Conv2d(32, 64, 3), tn.ReLU(), tn.MaxPool2d(2),
        tn.Flatten(), tn.Linear(1600, 128), tn.ReLU(), tn.Linear(128, 10),
    )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in initial_weights().items()})
    loss_fn = tn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def train(i, size):
        loss = loss_fn(model(x[i * size:(i + 1) * size]), y[i * size:(i + 1) * size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for i in range(2):
        train(i, CHECK_BATCH)
    with torch.no_grad():
        loss = loss_fn(model(x[2 * CHECK_BATCH:3 * CHECK_BATCH]), y[2 * CHECK_BATCH:
                                                                    3 * CHECK_BATCH])
    check_loss(loss.item(), "torch")
    if mode == "train":
        return time_steps(lambda i: train(i, batch), POOL // batch, batch, min_time)
    model.eval()

    def infer(i):
        with torch.no_grad():
            model(x[i * batch:(i + 1) * batch])

    return time_steps(infer, POOL // batch, batch, min_time)


# --- driver ----------------------------------------------------------------------------------
ROWS = [("train", 64), ("infer", 1), ("infer", 64), ("conv1_fwd", 64), ("conv1_bwd", 64),
        ("conv2_fwd", 64), ("conv2_bwd", 64)]


def describe_row(mode, values, names):
    medians = {n: statistics.median(v) for n, v in values.items()}
    ratios = [f"{median_ratio(values, 'fastnn', n):.2f}" for n in names[1:]]
    if mode.startswith("conv"):
        # Rates are calls/s; show milliseconds per call (the ratio stays a speed ratio).
        return (mode.replace("_fwd", " forward").replace("_bwd", " backward"),
                [f"{1e3 / medians[n]:.2f} ms" for n in names], ratios)
    return ("train" if mode == "train" else "inference",
            [f"{medians[n]:,.0f}/s" for n in names], ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_row_options(parser, ROWS, "train, infer, conv1_fwd, conv1_bwd, conv2_fwd, conv2_bwd; "
                                  "the conv rows are batch 64")
    args = parser.parse_args()
    peers = framework_peers(args.threads, with_numpy=False)
    print(machine_report([args.threads]))
    print("- network conv3x3(1->32)-relu-maxpool2-conv3x3(32->64)-relu-maxpool2-linear(1600->128)"
          "-relu-linear(10), padding 0, 1x28x28 inputs, Adam, cross-entropy, float32; "
          f"{args.rounds} alternated rounds per row")
    print(f"- conv1: x {CONVS['conv1'][0]} w {CONVS['conv1'][1]} (backward without dX: first "
          f"layer); conv2: x {CONVS['conv2'][0]} w {CONVS['conv2'][1]}\n")
    print_row_table(os.path.abspath(__file__), peers, args, describe_row)


if __name__ == "__main__":
    main()
