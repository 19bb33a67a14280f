"""Benchmark: peak memory and time of the greedy at scale, each case in its own subprocess.

``greedy``: ``fisher_greedy`` on a dense [U, C, k] float32 input (default U=20,000, C=10, k=1,400,
dense F, 20 picks, no labeled points, λ = 1).  Bar: it adds at most 0.6× its input's bytes + 0.6 GB.

``bait``: ``select("bait", model, pool, labeled, n=50, seed=0, lam=0.01)`` on a 20,000-sample pool
of 256-dim features (standard normal) through a model whose body (``features``) is the identity
and whose ``classifier`` is a bias-free ``nn.Linear(256, 10)`` (seeded init), 200 labeled, 50
picks (BAIT's default oversample 2: 100 forward and 50 backward steps).  Bars: at most 1.5 GB of
peak memory beyond its inputs, and at least 4× faster than the previous engine (579 s here).

"Added peak memory" is the process's peak resident set (VmHWM) during the call minus its resident
set (VmRSS) right after building the inputs; the peak is reset before the call (``5`` written to
/proc/self/clear_refs), so the inputs' construction does not count.  Wall and CPU seconds are
reported with the 1-minute load average before → after.

    python benchmarks/bench_memory.py                        # both cases, default threads
    python benchmarks/bench_memory.py --cases bait --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Identity(torch.nn.Module):
    def __init__(self, d: int, classes: int):
        super().__init__()
        self.features = torch.nn.Identity()
        self.classifier = torch.nn.Linear(d, classes, bias=False)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(args):
    """The case's inputs, and a function running the measured call."""
    g = torch.Generator().manual_seed(args.seed)
    if args.case == "greedy":
        from fishermask.kernels.greedy import fisher_greedy

        v = torch.randn(args.U, args.C, args.k, generator=g) / args.k ** 0.5
        a = torch.randn(4 * args.k, args.k, generator=g, dtype=torch.float64) / args.k ** 0.5
        fisher = a.T @ a / 4
        del a
        info = {"input_gb": v.numel() * v.element_size() / 1e9}

        def call():
            picks, ginfo = fisher_greedy(v, None, fisher, args.n, lam=args.lam, return_info=True,
                                         storage_dtype=getattr(torch, args.storage))
            info.update(rebuilds=ginfo["rebuilds"], steps=ginfo["steps"])
            return picks
        return info, call
    from fishermask.strategies import select

    torch.manual_seed(args.seed)
    model = _Identity(args.d, args.C).eval()
    pool = torch.randn(args.U, args.d, generator=g)
    labeled = torch.randperm(args.U, generator=g)[: args.L].numpy()
    info = {"input_gb": pool.numel() * 4 / 1e9}

    def call():
        sel = select("bait", model, pool, labeled, n=args.n, seed=0, lam=args.lam, device="cpu",
                     storage_dtype=args.storage, max_memory_gb=64)
        info.update(rebuilds=sel.diagnostics.get("greedy_rebuilds"),
                    steps=sel.diagnostics.get("greedy_steps"),
                    greedy_s=sel.diagnostics.get("greedy_seconds"),
                    embed_s=sel.diagnostics.get("gradients_seconds"),
                    fisher_s=sel.diagnostics.get("fisher_seconds"))
        return sel.indices
    return info, call


def worker(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    info, call = build(args)
    base = _status("VmRSS")
    reset = _reset_peak()
    if not reset:
        base = max(base, _status("VmHWM"))
    t0, c0 = time.perf_counter(), time.process_time()
    picks = call()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    info.update(wall_s=wall, cpu_s=cpu, rss_after_inputs_gb=base / 1e9,
                added_peak_gb=(_status("VmHWM") - base) / 1e9, peak_reset=reset,
                threads=torch.get_num_threads(), picks=len(picks))
    print("RESULT " + json.dumps(info))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="greedy,bait", help="greedy, bait (comma-separated)")
    p.add_argument("--threads", default="0",
                   help="comma-separated torch thread counts (0: torch default)")
    p.add_argument("--storage", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the pool sizes (a quick check: 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    for name, kind in (("U", int), ("C", int), ("k", int), ("d", int), ("L", int), ("n", int),
                       ("lam", float)):
        p.add_argument(f"--{name}", type=kind, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        return worker(args)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(here)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    sizes = {"greedy": dict(U=20000, C=10, k=1400, d=0, L=0, n=20, lam=1.0),
             "bait": dict(U=20000, C=10, k=2560, d=256, L=200, n=50, lam=0.01)}
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for case in args.cases.split(","):
            size = dict(sizes[case])
            size["U"] = max(int(size["U"] * args.scale), 2 * size["n"] + size["L"])
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--case={case}",
                   f"--threads={threads}", f"--storage={args.storage}", f"--seed={args.seed}"]
            cmd += [f"--{key}={value}" for key, value in size.items()]
            load = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(f"{case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
            r = dict(json.loads(line[7:]), case=case, load=f"{load:.1f}→{os.getloadavg()[0]:.1f}",
                     **size)
            print(f"# {case}, threads {r['threads']}: {r['wall_s']:.1f} s, added peak "
                  f"{r['added_peak_gb']:.2f} GB", file=sys.stderr, flush=True)
            rows.append(r)
    print(f"\nengine storage {args.storage}; {os.cpu_count()} cores\n")
    print("| case | U | C | k | L | picks | threads | input GB | added peak GB | bar GB | wall s "
          "| CPU s | greedy rebuilds | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        bar = 0.6 * r["input_gb"] + 0.6 if r["case"] == "greedy" else 1.5
        print(f"| {r['case']} | {r['U']} | {r['C']} | {r['k']} | {r['L']} | {r['n']} "
              f"| {r['threads']} | {r['input_gb']:.3f} | **{r['added_peak_gb']:.3f}** | {bar:.2f} "
              f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['rebuilds']} | {r['load']} |")
    for r in rows:
        if r["case"] == "bait" and r.get("greedy_s") is not None:
            print(f"\nbait (threads {r['threads']}): embeddings {r['embed_s']:.1f} s, F "
                  f"{r['fisher_s']:.1f} s, greedy {r['greedy_s']:.1f} s over {r['steps']} steps; "
                  f"{579 / r['wall_s']:.1f}× faster than the previous engine's 579 s")


if __name__ == "__main__":
    main()
