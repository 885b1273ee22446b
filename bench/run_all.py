"""Runs every fastnn benchmark and gathers their tables into one JSON and one Markdown file.

Each benchmark (gemm.py, mlp.py, cnn.py, compare.py) runs as its own script, exactly as it would
alone; this driver only picks its options, captures what it prints and parses its Markdown
tables. The results regenerate the README's benchmark section in one command:

    python bench/run_all.py                       # full run (a long one: tens of minutes)
    python bench/run_all.py --quick               # a few minutes, rough figures
    python bench/run_all.py --only compare --out docs/images

Writes OUT/benchmarks.json (per benchmark: command, exit code, seconds, machine lines, tables as
header + rows, raw output; compare.py's own compare.json is included) and OUT/benchmarks.md
(every benchmark's printed report). compare.py's pictures land in OUT as well.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(BENCH_DIR, "results")
ORDER = ("gemm", "mlp", "cnn", "compare")

# Options per benchmark: (full run, quick run). The quick run keeps every table but measures
# less (fewer alternated pairs, shorter timing windows, fewer shapes and rows).
OPTIONS: Dict[str, tuple] = {
    "gemm": ([], ["--pairs", "1", "--threads", "2", "--min-time", "0.1",
                  "--shapes", "1024x1024x1024,128x784x512:nt,1x784x512:nt"]),
    "mlp": ([], ["--rounds", "1", "--min-time", "0.3",
                 "--rows", "train:1,train:32,train:128,infer:1,infer:128,memory:128"]),
    "cnn": ([], ["--rounds", "1", "--min-time", "0.3", "--rows", "train:64,infer:1,infer:64"]),
    "compare": ([], ["--quick"]),
}


def parse_tables(text: str) -> List[dict]:
    """Markdown tables in text: [{"header": [...], "rows": [[...], ...]}], in order."""
    tables, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if current is None:
                current = {"header": cells, "rows": []}
            elif not all(set(c) <= set("-: ") for c in cells):
                current["rows"].append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    if current is not None:
        tables.append(current)
    return tables


def machine_lines(text: str) -> List[str]:
    """The "- ..." lines a benchmark prints before its first table (machine and settings)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("|"):
            break
        if line.startswith("- "):
            lines.append(line[2:])
    return lines


def run_benchmark(name: str, extra: List[str], quick: bool, out: str, threads: int,
                  mnist_dir: str) -> dict:
    options = list(OPTIONS[name][1 if quick else 0]) + extra
    if name == "compare":
        options += ["--out", out]
        if mnist_dir:
            options += ["--mnist-dir", mnist_dir]
    if threads is not None and name in ("mlp", "cnn", "compare"):
        options += ["--threads", str(threads)]
    command = [sys.executable, os.path.join(BENCH_DIR, f"{name}.py")] + options
    print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"   {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
              file=sys.stderr, flush=True)
    else:
        print(f"   {name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
    result = {"command": command[1:], "exit_code": proc.returncode, "seconds": seconds,
              "machine": machine_lines(proc.stdout), "tables": parse_tables(proc.stdout),
              "output": proc.stdout, "stderr_tail": proc.stderr[-3000:]}
    if name == "compare" and proc.returncode == 0:
        with open(os.path.join(out, "compare.json")) as f:
            result["compare"] = json.load(f)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="rough figures in a few minutes")
    parser.add_argument("--only", default=",".join(ORDER),
                        help=f"comma-separated subset of {', '.join(ORDER)}")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="directory for benchmarks.json, benchmarks.md and the pictures")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for mlp, cnn and compare (default: each benchmark's "
                             "own; gemm measures its own list)")
    parser.add_argument("--mnist-dir", default=None, help="passed to compare.py")
    for name in ORDER:
        parser.add_argument(f"--{name}-args", default="",
                            help=f"extra arguments for {name}.py (one string)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    os.makedirs(args.out, exist_ok=True)

    results, failed = {}, []
    for name in names:
        extra = getattr(args, f"{name}_args").split()
        results[name] = run_benchmark(name, extra, args.quick, args.out, args.threads,
                                      args.mnist_dir)
        if results[name]["exit_code"] != 0:
            failed.append(name)

    report = {"quick": args.quick, "python": platform.python_version(),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "benchmarks": results,
              "failed": failed}
    json_path = os.path.join(args.out, "benchmarks.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    parts = [f"# fastnn benchmarks{' (quick run)' if args.quick else ''}",
             f"Generated by `python bench/run_all.py{' --quick' if args.quick else ''}` on "
             f"{report['finished']}."]
    for name, r in results.items():
        parts.append(f"## {name}\n\n`python bench/{name}.py {' '.join(r['command'][1:])}`"
                     f" ({r['seconds']:.0f} s)\n")
        parts.append(r["output"].strip() if r["exit_code"] == 0
                     else f"failed with exit code {r['exit_code']}:\n\n```\n"
                          f"{r['stderr_tail'].strip()}\n```")
    md_path = os.path.join(args.out, "benchmarks.md")
    with open(md_path, "w") as f:
        f.write("\n\n".join(parts) + "\n")
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
