"""GEMM throughput of fastnn against numpy (OpenBLAS), per DESIGN.md's benchmark protocol.

Each shape is checked against a float64 product first, then fastnn and numpy run alternately in
their own processes; the table gives median GFLOP/s of each and the median of pairwise ratios.

    PYTHONPATH=python python bench/gemm.py                      # the full table
    PYTHONPATH=python python bench/gemm.py --pairs 3 --threads 2 --shapes 128x784x512:nt

A shape is MxKxN[:layout]: op(A) is M x K, op(B) is K x N; layout "nt" stores B as (N, K) and
multiplies by its transpose (a Linear layer's weight), "tn" stores A as (K, M), "nn" neither.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _protocol import Impl, compare, fastnn_env, machine_report, measure, numpy_env  # noqa: E402

DEFAULT_SHAPES = [
    "1024x1024x1024",
    "128x784x512:nt",    # Linear(784, 512) forward at batch 128
    "128x512x784",       # its input gradient dZ @ W
    "512x784x128",
    "1x784x512:nt",      # the same Linear at batch 1: memory-bound
    "1x512x784",         # its input gradient at batch 1 (row path)
    "512x1x784:tn",      # its weight gradient dZ.T @ X at batch 1: an outer product (small k)
    "512x4x784:tn",      # ... at batch 4
    "256x1x512:tn",      # Linear(512, 256)'s weight gradient at batch 1
    "64x64x64",
]


def parse_shape(text: str):
    dims, _, layout = text.partition(":")
    layout = layout or "nn"
    if layout not in ("nn", "nt", "tn", "tt"):
        raise ValueError(f"unknown layout {layout!r} in shape {text!r} (use nn, nt, tn or tt)")
    try:
        m, k, n = (int(x) for x in dims.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} is not MxKxN[:layout]") from None
    return m, k, n, layout


def make_operands(shape: str, dtype: str):
    import numpy as np

    m, k, n, layout = parse_shape(shape)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if layout[0] == "t" else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if layout[1] == "t" else (k, n)).astype(dtype)
    op_a = a.T if layout[0] == "t" else a
    op_b = b.T if layout[1] == "t" else b
    return m, k, n, layout, a, b, op_a, op_b


def check(c, op_a, op_b, who: str) -> None:
    import numpy as np

    expected = op_a.astype(np.float64) @ op_b.astype(np.float64)
    err = float(np.max(np.abs(c - expected))) if c.size else 0.0
    scale = np.sqrt(op_a.shape[1]) * (1e-5 if c.dtype == np.float32 else 1e-13)
    if not err <= 10 * scale:
        raise AssertionError(f"{who}: largest difference from the float64 product is {err:.3g}")


def run_fastnn(shape: str, threads: int, dtype: str = "float32", min_time: float = 0.3) -> float:
    import numpy as np

    import fastnn
    from fastnn import _core

    fastnn.set_num_threads(threads)
    m, k, n, layout, a, b, op_a, op_b = make_operands(shape, dtype)
    c = np.empty((m, n), dtype)
    ta, tb = layout[0] == "t", layout[1] == "t"
    _core.gemm(c, a, b, trans_a=ta, trans_b=tb)
    check(c, op_a, op_b, "fastnn")
    seconds = measure(lambda: _core.gemm(c, a, b, trans_a=ta, trans_b=tb), min_time)
    return 2.0 * m * n * k / seconds / 1e9


def run_numpy(shape: str, threads: int, dtype: str = "float32", min_time: float = 0.3) -> float:
    import numpy as np

    m, k, n, layout, a, b, op_a, op_b = make_operands(shape, dtype)
    c = np.empty((m, n), dtype)
    np.matmul(op_a, op_b, out=c)
    check(c, op_a, op_b, "numpy")
    seconds = measure(lambda: np.matmul(op_a, op_b, out=c), min_time)
    return 2.0 * m * n * k / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternated pairs (default 5)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated MxKxN[:nn|nt|tn|tt]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--min-time", type=float, default=0.3,
                        help="seconds of timed calls per process")
    parser.add_argument("--verbose", action="store_true", help="print every pair")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        parse_shape(s)

    print(machine_report(threads))
    print(f"- dtype {args.dtype}, {args.pairs} pairs per row\n")
    print("| M x K x N | layout | threads | fastnn GFLOP/s | numpy GFLOP/s | fastnn / numpy |")
    print("|---|---|---|---|---|---|")
    log = (lambda s: print(s, file=sys.stderr)) if args.verbose else None
    path = os.path.abspath(__file__)
    for t in threads:
        for s in shapes:
            kwargs = {"shape": s, "threads": t, "dtype": args.dtype, "min_time": args.min_time}
            a = Impl("fastnn", path, "run_fastnn", kwargs, **fastnn_env(t))
            b = Impl("numpy", path, "run_numpy", kwargs, **numpy_env(t))
            r = compare(a, b, pairs=args.pairs, log=log)
            m, k, n, layout = parse_shape(s)
            print(f"| {m} x {k} x {n} | {layout} | {t} | {r.a_median:.1f} | {r.b_median:.1f} "
                  f"| {r.ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
