"""Benchmark: the greedy engine against two per-step-recompute baselines, with this machine's floors.

Methods, each in its own subprocess (its peak resident set is its own):

* ``engine``: the engine of ``fisher_greedy`` (GreedyDriver + one GreedyShard, float32 products,
  C×C state, scores and checks in float64); ``engine64``: the same with float64 products.  Init = the
  driver's M₀, A and the shards' P, Q; the steps include any rebuild.  Like the baselines it
  computes the picks only (not the diagnostics' final tr(M_S⁻¹F), a k³ factorisation).
* ``public``: the public codes' algorithm as badge's BAIT ``select`` runs it, float32: four
  [U·C, k]×[k, k] GEMMs per step, 8·U·C·k² flops (``benchmarks/baselines.py``).
* ``recompute``: the cleverest per-step recompute, float32: A F A once per step, then V A and
  V·AFA, 4·U·C·k² + 4k³ flops per step.

**Noise.**  This machine's timings of the same run spread by 10-30 %.  Every figure is the least
disturbed one: the engine's fastest of its complete runs (fresh driver and shard each) repeated for
``--min-seconds`` (10 s: about the window a baseline's steps span), a baseline's init plus n times
its fastest step (its steps are the same GEMMs); the total of the median run (engine) or of the
median step (baselines) is given in brackets, the engine's run count in the method column.

Every method makes the forward steps of ``n`` picks (oversample 1) on the same random dense pool
(V = randn/√k, F = Σ_X VᵀV/|X| in float64, λ = 1).  The baselines run ``--naive-steps`` steps
(0: all n); their total is init + n·(fastest step) and is marked extrapolated when fewer were timed;
their picks are compared with the engine's first picks.

Floors (``benchmarks/floors.py``), measured in each method's process just before it runs, with its
threads: the float32 and float64 GEMM rates ([2560, k]×[k, k]) and the copy bandwidth.  Beside
every time: its compute floor (flops / GEMM rate of the dtype used) and bandwidth floor (bytes /
bandwidth), ``c / b``.  Peak RSS: the process's peak resident set during the method (the rates'
buffers excluded: the peak is reset after them), and in brackets what the method added to the
resident set it started with (the pool, F).  Wall and process CPU seconds are both given, with the 1-minute load average
before → after each method; ``--busy N`` runs N busy-looping processes throughout (another job; the methods start once the
load average shows them),
``--wait-policy`` sets OMP_WAIT_POLICY for the methods' processes.

    python benchmarks/bench_greedy.py --case a --threads 1,0          # U=1000, k=1400, 40 picks
    python benchmarks/bench_greedy.py --case b --threads 1,0          # U=2000, k=400, 40 picks
    python benchmarks/bench_greedy.py --case setting2 --threads 1,0   # U=6750, k=1402, 500 picks
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = {  # name: (U, L, C, k, n, baseline steps timed; 0 = all)
    "a": (1000, 100, 10, 1400, 40, 0),
    "b": (2000, 100, 10, 400, 40, 0),
    "setting2": (6750, 500, 10, 1402, 500, 2),
}


def make_data(args, path: str) -> None:
    """The pool V [U + L, C, k] (float32) and F = Σ VᵀV / |X| (float64), saved to ``path``."""
    g = torch.Generator().manual_seed(args.seed)
    pool = torch.randn(args.U + args.L, args.C, args.k, generator=g) / math.sqrt(args.k)
    flat = pool.reshape(-1, args.k).to(torch.float64)
    torch.save({"pool": pool, "fisher": flat.T @ flat / len(pool)}, path)


def run_engine(args, cands, lab, fisher, dtype) -> dict:
    """Complete runs of the engine (fresh driver and shard each) until ``args.min_seconds`` have
    passed (at most ``args.repeat`` runs); the fastest, with the median run's total as
    ``median_s``."""
    runs, t0 = [], time.perf_counter()
    while not runs or (len(runs) < args.repeat and time.perf_counter() - t0 < args.min_seconds):
        runs.append(_engine_once(args, cands, lab, fisher, dtype))
    best = min(runs, key=lambda r: r["total_s"])
    return dict(best, median_s=sorted(r["total_s"] for r in runs)[len(runs) // 2], runs=len(runs))


def _engine_once(args, cands, lab, fisher, dtype) -> dict:
    from timing import TimedGroup  # benchmarks/timing.py, beside this script
    from fishermask.kernels._driver import GreedyDriver, run_greedy
    from fishermask.kernels._group import LocalShardGroup
    from fishermask.kernels._shard import GreedyShard
    from fishermask.kernels.embeddings import as_embeddings

    t0, c0 = time.perf_counter(), time.process_time()
    emb, lab_emb = as_embeddings(cands, "candidates"), as_embeddings(lab, "labeled")
    driver = GreedyDriver(lab_emb if len(lab) else None, fisher, args.n, lam=args.lam,
                          weighting="bait", k=args.k, compute_dtype=dtype)
    group = TimedGroup(LocalShardGroup([GreedyShard(emb, 0)]))
    group.start(driver.fisher, driver.w_s, driver.compute_dtype)
    t1 = time.perf_counter()
    order, info = run_greedy(group, driver, len(emb), args.n, 1, objective=False)
    t2, c2 = time.perf_counter(), time.process_time()
    init = (t1 - t0) + group.times["reset"][0]
    return dict(init_s=init, step_s=(t2 - t0 - init) / args.n, total_s=t2 - t0,
                cpu_total_s=c2 - c0, steps=args.n, measured=True, picks=order,
                eigen=group.forms[0] == "Eigen",
                checks={key: info[key] for key in ("rebuilds", "overrides", "contenders",
                                                    "float64_resets")})


def worker(args) -> None:
    from baselines import METHODS, run  # benchmarks/baselines.py
    from bench_memory import _reset_peak, _status
    from floors import machine

    if args.threads:
        torch.set_num_threads(args.threads)
    data = torch.load(args.data)
    pool, fisher = data["pool"], data["fisher"]
    cands, lab = pool[: args.U], pool[args.U:]
    rates = machine(args.k)
    _reset_peak()  # the peak from here on: the method's own (not the rates' buffers)
    rss0 = _status("VmRSS")
    if args.worker in ("engine", "engine64"):
        out = run_engine(args, cands, lab, fisher,
                         torch.float32 if args.worker == "engine" else torch.float64)
    else:
        steps = args.naive_steps or args.n
        out = run(METHODS[args.worker], cands, lab, fisher, lam=args.lam, n=args.n, steps=steps)
        times = sorted(out.pop("step_times"))  # the steps are the same work: the fastest is the
        out.update(step_s=times[0],             # least disturbed, as the engine's fastest run
                   total_s=out["init_s"] + args.n * times[0],
                   median_s=out["init_s"] + args.n * times[len(times) // 2],
                   cpu_total_s=out["init_cpu"] + args.n * out["step_cpu"],
                   measured=steps >= args.n)
    out.update(rates=rates, threads=torch.get_num_threads(), peak_rss_mb=_status("VmHWM") / 2**20,
               added_mb=(_status("VmHWM") - rss0) / 2**20)
    print("RESULT " + json.dumps(out))


def run_method(method: str, args, threads: int, env: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, f"--threads={threads}",
           f"--data={args.data}"] + [f"--{key.replace('_', '-')}={getattr(args, key)}"
                                     for key in ("U", "L", "C", "k", "n", "lam", "naive_steps",
                                                 "repeat", "min_seconds")]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = dict(json.loads(line[7:]), load=f"{load:.1f}→{os.getloadavg()[0]:.1f}")
    print(f"# {method}, threads {out['threads']}: {out['total_s']:.1f} s wall, "
          f"{out['cpu_total_s']:.1f} s CPU, load {out['load']}", file=sys.stderr, flush=True)
    return out


def counts_for(method: str, args, r: dict) -> dict:
    from floors import engine_counts, public_counts, recompute_counts

    if method in ("engine", "engine64"):  # r["eigen"]: the engine started from A's eigen form
        counts = engine_counts(args.U, args.L, args.C, args.k, eigen=r["eigen"])
        if method == "engine64":  # the same flops, all in float64
            counts = {ph: dict(c, f64=c["f64"] + c["f32"], f32=0) for ph, c in counts.items()}
        return counts
    return (public_counts if method == "public" else recompute_counts)(args.U, args.L, args.C,
                                                                        args.k)


def row(method: str, r: dict, args, base: dict | None) -> str:
    from floors import floors

    fl = floors(counts_for(method, args, r), r["rates"])
    total_floor = fl["init"][0] + args.n * fl["step"][0]
    agree = "—" if base is None or method.startswith("engine") else (
        "yes" if r["picks"] == base["picks"][: len(r["picks"])] else "NO")
    total = f"{r['total_s']:.2f} ({r['median_s']:.2f})" + ("" if r["measured"] else " (extrap.)")
    steps = f" ({r['runs']} runs)" if "runs" in r else (
        "" if r["measured"] else f" ({r['steps']} timed)")
    faster = "—" if base is None or method == "engine" else (
        f"**{r['total_s'] / base['total_s']:.1f}×** / {r['cpu_total_s'] / base['cpu_total_s']:.1f}×")
    checks = " ".join(f"{v} {k.replace('_', ' ')}" for k, v in r.get("checks", {}).items() if v)
    rates = r["rates"]
    return (f"| {r['threads']} | {method}{steps} | {r['init_s']:.2f} ({fl['init'][0]:.2f} / "
            f"{fl['init'][1]:.3f}) | {r['step_s']:.4f} ({fl['step'][0]:.4f} / {fl['step'][1]:.4f}) "
            f"| {r['step_s'] / fl['step'][0]:.2f}× | {total} | {r['cpu_total_s']:.2f} "
            f"| {r['total_s'] / total_floor:.2f}× | {r['peak_rss_mb']:.0f} (+{r['added_mb']:.0f}) "
            f"| {r['load']} "
            f"| {rates['r32'] / 1e9:.1f} / {rates['r64'] / 1e9:.1f} / {rates['bw'] / 1e9:.1f} "
            f"| {agree} | {checks or '—'} | {faster} |")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=sorted(CASES) + ["custom"], default="a",
                   help="a: U=1000, L=100, C=10, k=1400, n=40; b: U=2000, L=100, C=10, k=400, "
                        "n=40; setting2: U=6750, L=500, C=10, k=1402, n=500; custom: the flags")
    for name, default in (("U", 1000), ("L", 100), ("C", 10), ("k", 1400), ("n", 40)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--naive-steps", type=int, default=None,
                   help="baseline steps timed (0: all n; default: the case's)")
    p.add_argument("--min-seconds", type=float, default=10.0,
                   help="repeat the engine's complete runs for this long (the fastest is "
                        "reported; a baseline: its fastest step, its steps being the same work)")
    p.add_argument("--repeat", type=int, default=20, help="at most this many engine runs")
    p.add_argument("--threads", default="1,0",
                   help="comma-separated torch thread counts (0: torch's default)")
    p.add_argument("--methods", default="engine,public,recompute",
                   help="engine, engine64, public, recompute (comma-separated)")
    p.add_argument("--busy", type=int, default=0, help="busy-looping processes (another job)")
    p.add_argument("--wait-policy", choices=["inherit", "unset", "PASSIVE", "ACTIVE"],
                   default="inherit", help="OMP_WAIT_POLICY of the methods' processes")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case != "custom" and not args.worker:
        args.U, args.L, args.C, args.k, args.n, steps = CASES[args.case]
        args.naive_steps = steps if args.naive_steps is None else args.naive_steps
    args.naive_steps = args.naive_steps or 0
    return args


def main() -> None:
    args = parse()
    if args.worker:
        args.threads = int(args.threads)
        return worker(args)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(HERE), HERE] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    if args.wait_policy == "unset":
        env.pop("OMP_WAIT_POLICY", None)
    elif args.wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.wait_policy
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    settle(args.busy)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            args.data = os.path.join(tmp, "data.pt")
            make_data(args, args.data)
            report(args, env)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


def settle(busy: int, limit_s: float = 120.0) -> None:
    """Wait until the 1-minute load average shows the ``busy`` processes (at most ``limit_s``),
    as it does for a job that has run a while: the greedy's thread choice reads it."""
    t0 = time.perf_counter()
    while busy and os.getloadavg()[0] < busy - 0.2 and time.perf_counter() - t0 < limit_s:
        time.sleep(2)
    if busy:
        print(f"load average {os.getloadavg()[0]:.2f} after {time.perf_counter() - t0:.0f} s "
              f"with {busy} busy-loop processes")


def report(args, env: dict) -> None:
    print(f"U={args.U}, L={args.L}, C={args.C}, k={args.k}, n={args.n}, λ={args.lam}, "
          f"oversample 1; {os.cpu_count()} cores; OMP_WAIT_POLICY="
          f"{env.get('OMP_WAIT_POLICY', '(unset)')}; {args.busy} busy-loop processes\n")
    print("| threads | method | init s (floor c / b) | s/step (floor c / b) | step / floor "
          "| total s (median) | CPU s | total / floor | peak RSS MiB (+ method) | load | GFLOP/s f32 / f64, GB/s "
          "| picks agree | rebuilds etc. | engine faster (wall / CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        results = {m: run_method(m, args, threads, env) for m in args.methods.split(",")}
        base = results.get("engine")
        for method, r in results.items():
            print(row(method, r, args, base), flush=True)


if __name__ == "__main__":
    main()
