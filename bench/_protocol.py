"""The benchmark protocol shared by fastnn's benchmarks (see DESIGN.md, "Benchmark protocol").

Each implementation runs in a fresh subprocess, so that one library's idle worker threads cannot
steal cores from the next one timed. Implementations A and B are alternated (A B A B ...) for at
least five pairs, and the result is the median of the pairwise ratios A/B, which holds up far
better than absolute figures on a shared machine.

An implementation is a function named in a Python file: it builds its data (seeded, identical
for every implementation), checks its result, warms up, times itself and returns one float, a
rate where higher is better (GFLOP/s, samples/s). `measure()` below is the timing helper such
functions use.

    from _protocol import Impl, compare, fastnn_env, machine_report, numpy_env
    a = Impl("fastnn", __file__, "run_fastnn", {"threads": 2}, **fastnn_env(2))
    b = Impl("numpy", __file__, "run_numpy", {"threads": 2}, **numpy_env(2))
    result = compare(a, b, pairs=5)
    print(machine_report([2]))
    print(result.ratio, result.a_median, result.b_median)

A torch peer is an Impl like any other (env=thread_env(n), and torch.set_num_threads(n) inside
its function).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Dict, List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Set on these machines for old OpenBLAS builds; they slow a current one, so a numpy peer runs
# without them (only in the benchmark's own child process).
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass
class Impl:
    """One implementation: `func(**kwargs)` from the Python file `path`, run in a child process
    whose environment is this process's, minus `unset`, plus `env`."""

    name: str
    path: str
    func: str
    kwargs: Dict[str, object] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    unset: tuple = ()


@dataclass
class Comparison:
    a: Impl
    b: Impl
    a_values: List[float]
    b_values: List[float]

    @property
    def ratios(self) -> List[float]:
        return [x / y for x, y in zip(self.a_values, self.b_values)]

    @property
    def ratio(self) -> float:
        """Median of the pairwise ratios a / b."""
        return statistics.median(self.ratios)

    @property
    def a_median(self) -> float:
        return statistics.median(self.a_values)

    @property
    def b_median(self) -> float:
        return statistics.median(self.b_values)


def thread_env(threads: int) -> Dict[str, str]:
    """Thread settings for any child: OpenMP and OpenBLAS pools sized to `threads`."""
    return {"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


def numpy_env(threads: int) -> Dict[str, object]:
    """Keyword arguments (env, unset) of an Impl for a numpy/OpenBLAS peer."""
    return {"env": thread_env(threads), "unset": OPENBLAS_OVERRIDES}


def fastnn_env(threads: int) -> Dict[str, object]:
    """Keyword arguments (env, unset) of an Impl for fastnn. OpenBLAS gets one thread there, so
    the numpy calls a benchmark makes to build or check data leave no spinning threads behind."""
    env = thread_env(threads)
    env["OPENBLAS_NUM_THREADS"] = "1"
    return {"env": env, "unset": ()}


def _prefer_in_tree_build(env: dict) -> None:
    """Puts the checkout's python/ first on env's PYTHONPATH when it holds a compiled fastnn: an
    in-tree development build wins over an installed fastnn only when it exists."""
    package_dir = os.path.join(REPO_ROOT, "python", "fastnn")
    if os.path.isdir(package_dir) and any(f.startswith("_core") for f in os.listdir(package_dir)):
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.dirname(package_dir), env.get("PYTHONPATH", "")) if p)


def run_impl(impl: Impl, timeout: float = 600.0) -> float:
    """Runs one implementation in a fresh child process and returns its float result."""
    env = {k: v for k, v in os.environ.items() if k not in impl.unset}
    env.update(impl.env)
    _prefer_in_tree_build(env)
    spec = json.dumps({"path": os.path.abspath(impl.path), "func": impl.func,
                       "kwargs": impl.kwargs})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {impl.name} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    last = proc.stdout.strip().splitlines()[-1]
    return float(json.loads(last)["result"])


def compare(a: Impl, b: Impl, pairs: int = 5, warmup_pair: bool = True,
            log: Optional[Callable[[str], None]] = None) -> Comparison:
    """Alternates a and b for `pairs` pairs (after one discarded warm-up pair, which settles
    the page cache, CPU frequency and imports) and returns all measurements."""
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    if warmup_pair:
        run_impl(a)
        run_impl(b)
    a_values, b_values = [], []
    for i in range(pairs):
        a_values.append(run_impl(a))
        b_values.append(run_impl(b))
        if log:
            log(f"  pair {i + 1}/{pairs}: {a.name} {a_values[-1]:.4g}, "
                f"{b.name} {b_values[-1]:.4g}, ratio {a_values[-1] / b_values[-1]:.3f}")
    return Comparison(a, b, a_values, b_values)


def alternate(impls: List[Impl], rounds: int, log: Optional[Callable[[str], None]] = None,
              label: str = "") -> Dict[str, List[float]]:
    """Runs one discarded warm-up round, then `rounds` rounds of every implementation in turn
    (A B C A B C ...), and returns each one's results by name."""
    for impl in impls:  # warm-up round: page cache, imports, CPU frequency
        run_impl(impl)
    values: Dict[str, List[float]] = {impl.name: [] for impl in impls}
    for round_index in range(rounds):
        for impl in impls:
            values[impl.name].append(run_impl(impl))
        if log:
            log(f"  {label} round {round_index + 1}: " + ", ".join(
                f"{n} {v[-1]:.4g}" for n, v in values.items()))
    return values


def median_ratio(values: Dict[str, List[float]], a: str, b: str) -> float:
    """Median over rounds of values[a] / values[b] (each round's pair measured side by side)."""
    return statistics.median(x / y for x, y in zip(values[a], values[b]))


# --- tables of (mode, batch) rows, as in bench/mlp.py and bench/cnn.py ----------------------------
def add_row_options(parser: argparse.ArgumentParser, rows: List[tuple], modes: str) -> None:
    """The options of a row table: --rounds, --threads, --min-time, --rows, --verbose."""
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of timed steps per process")
    parser.add_argument("--rows", default=",".join(f"{m}:{b}" for m, b in rows),
                        help=f"comma-separated mode:batch (modes: {modes})")
    parser.add_argument("--verbose", action="store_true")


def framework_peers(threads: int, with_numpy: bool) -> List[tuple]:
    """(name, function name, env) of fastnn, PyTorch when installed, and a numpy loop if asked:
    the benchmark file defines run_fastnn, run_torch and run_numpy."""
    peers = [("fastnn", "run_fastnn", fastnn_env(threads))]
    if have_module("torch"):
        peers.append(("torch", "run_torch", fastnn_env(threads)))
    else:
        print("PyTorch is not installed: its column is skipped", file=sys.stderr)
    if with_numpy:
        peers.append(("numpy", "run_numpy", numpy_env(threads)))
    return peers


def print_row_table(path: str, peers: List[tuple], args: argparse.Namespace,
                    describe: Callable[[str, Dict[str, List[float]], List[str]], tuple]) -> None:
    """Measures every --rows entry of the benchmark file `path` with its peers alternated and
    prints a Markdown table. describe(mode, values, names) gives (label, cells, ratio cells)."""
    names = [name for name, _, _ in peers]
    header = ["what", "batch"] + names + [f"fastnn / {n}" for n in names[1:]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    for row in args.rows.split(","):
        mode, batch = row.split(":")[0], int(row.split(":")[1])
        kwargs = {"mode": mode, "batch": batch, "threads": args.threads,
                  "min_time": args.min_time}
        impls = [Impl(name, path, func, kwargs, **env) for name, func, env in peers]
        values = alternate(impls, args.rounds, log, f"{mode} {batch}")
        label, cells, ratios = describe(mode, values, names)
        print(f"| {label} | {batch} | " + " | ".join(cells + ratios) + " |", flush=True)


def have_module(name: str) -> bool:
    """True when `name` can be imported (checked without importing it)."""
    return importlib.util.find_spec(name) is not None


def measure(fn: Callable[[], object], min_time: float = 0.3, samples: int = 7,
            warmup: int = 3) -> float:
    """Median seconds per call of fn(). Calls are batched so that each timed sample lasts at
    least min_time / samples (small kernels are not drowned by the timer's resolution)."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    batch = max(1, int(min_time / samples / one))
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times)


def time_steps(step: Callable[[int], object], batches: int, batch: int,
               min_time: float) -> float:
    """Samples per second of step(batch_index) cycling over `batches` batches of `batch`
    samples: a short warm-up, then the median of three timed windows of min_time / 3 each."""
    for i in range(min(5, batches)):
        step(i % batches)
    rates = []
    for _ in range(3):
        count, started = 0, time.perf_counter()
        while True:
            step(count % batches)
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_time / 3 and count >= 3:
                break
        rates.append(count * batch / elapsed)
    return statistics.median(rates)


def peak_memory_mb() -> float:
    """Peak resident memory of this process. VmHWM belongs to the process's own address space;
    ru_maxrss would also count the parent's size at fork (Linux keeps the larger)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_report(threads: List[int]) -> str:
    """CPU, cores, thread counts measured and library versions, as Markdown lines. Versions are
    read from package metadata; fastnn's build details come from a child process, so this process
    imports nothing heavy."""
    probe = ("import fastnn, fastnn._core as c; print(fastnn.__version__, c.kernel_isa(), "
             "c.openmp_enabled(), fastnn.__file__)")
    env = dict(os.environ)
    _prefer_in_tree_build(env)
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    fastnn_info = proc.stdout.strip() if proc.returncode == 0 else "not importable"
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"- threads measured: {', '.join(str(t) for t in threads)}",
        f"- Python {platform.python_version()}, numpy {_version('numpy')}, "
        f"torch {_version('torch')}",
        f"- fastnn (version, kernels, OpenMP, path): {fastnn_info}",
        "- protocol: each implementation in its own process, alternated, median of pairwise "
        "ratios; OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for the numpy peer",
    ]
    return "\n".join(lines)


def _worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    module_spec = importlib.util.spec_from_file_location("_bench_target", spec["path"])
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, os.path.dirname(spec["path"]))
    module_spec.loader.exec_module(module)
    result = float(getattr(module, spec["func"])(**spec["kwargs"]))
    print(json.dumps({"result": result}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="benchmark worker (used by compare())")
    parser.add_argument("--worker", required=True, help="JSON: path, func, kwargs")
    _worker(parser.parse_args().worker)
