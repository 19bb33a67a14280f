"""Benchmark: the greedy engine (fishermask.kernels.greedy) vs the public codes' per-step recomputation.

The baseline is the public BAIT/FisherMask select loop: at every step, for every candidate,
recompute Ṽ_x A F A Ṽ_xᵀ and (I + Ṽ_x A Ṽ_xᵀ)⁻¹ in float64 (chunks of 200 candidates, Ṽ_x A
evaluated once and reused), take the argmax, and Woodbury-update A.  ``naive-afa`` is a stronger
variant that forms AFA once per step (2 instead of 3 big GEMMs per candidate chunk).  The baselines
run only ``--naive-steps`` steps; their total is extrapolated as init + steps·(mean time per step),
and their picks are checked against the first picks of the engine's run.

The engine is :func:`~fishermask.kernels.greedy.run_greedy` with one in-process
:class:`~fishermask.kernels.greedy_shard.GreedyShard` (what ``fisher_greedy`` runs); its
initialisation (M, A on the driver, P and Q for every candidate) is reported apart from the steps.

Each method runs in its own subprocess so that its peak resident set (ru_maxrss) is its own.  Wall
time and process CPU time are both reported, with the 1-minute load average before→after each
method: on a shared machine the wall times (more so with several torch threads, whose OpenMP
barriers stall when a core is taken) depend on the other load; ``--threads 1`` with CPU time is the
steadiest comparison.

    python benchmarks/bench_greedy.py --case small --threads 1,0      # U=1000, k=1400, 40 picks
    python benchmarks/bench_greedy.py --case setting2 --threads 1,0   # U=6750, k=1402, 500 picks
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch


def make_data(args):
    g = torch.Generator().manual_seed(args.seed)
    pool = torch.randn(args.U + args.L, args.C, args.k, generator=g) / math.sqrt(args.k)
    flat = pool.reshape(-1, args.k).to(torch.float64)
    fisher = flat.T @ flat / len(pool)  # F = Σ_x V_xᵀV_x / |X| over the whole pool
    return pool[: args.U], pool[args.U:], fisher


def run_engine(args, cands, lab, fisher):
    """The engine of fisher_greedy (GreedyDriver + one GreedyShard), timed by phase: the driver's
    set-up and the shard's P, Q initialisation apart from the steps."""
    from timing import TimedGroup  # benchmarks/timing.py, beside this script
    from fishermask.kernels._driver import GreedyDriver, run_greedy
    from fishermask.kernels._group import LocalShardGroup
    from fishermask.kernels._shard import GreedyShard
    from fishermask.kernels.embeddings import STORAGE_DTYPES, as_embeddings

    t0, c0 = time.perf_counter(), time.process_time()
    emb = as_embeddings(cands, "candidates").to(storage_dtype=STORAGE_DTYPES[args.storage])
    lab_emb = as_embeddings(lab, "labeled").to(storage_dtype=STORAGE_DTYPES[args.storage])
    driver = GreedyDriver(lab_emb if len(lab) else None, fisher, args.n, lam=args.lam,
                          weighting="bait", k=args.k)
    group = TimedGroup(LocalShardGroup([GreedyShard(emb, 0)]))
    group.start(driver.fisher, driver.w_s)
    t1 = time.perf_counter()
    order, info = run_greedy(group, driver, len(emb), args.n, 1)
    t2, c2 = time.perf_counter(), time.process_time()
    init = (t1 - t0) + group.seconds.get("reset", 0.0) / max(1, 1 + info["rebuilds"])
    return dict(init_s=init, steps=args.n, step_s=(t2 - t0 - init) / args.n, total_s=t2 - t0,
                cpu_total_s=c2 - c0, picks=order, measured=True, rebuilds=info["rebuilds"],
                overrides=info["overrides"], direct_solves=info["direct_solves"])


def run_naive(args, cands, lab, fisher, afa: bool, chunk: int = 200):
    t0, c0 = time.perf_counter(), time.process_time()
    n, L, k, C = args.n, args.L, args.k, args.C
    w_l, w_s = 1.0 / (L + n), n / (L + n)
    lab64 = lab.reshape(-1, k).to(torch.float64)
    m0 = args.lam * torch.eye(k, dtype=torch.float64) + w_l * (lab64.T @ lab64)
    a = torch.linalg.inv(m0)
    vt = cands.to(torch.float64) * math.sqrt(w_s)
    eye = torch.eye(C, dtype=torch.float64)
    selected = torch.zeros(len(vt), dtype=torch.bool)
    t1, c1 = time.perf_counter(), time.process_time()
    picks = []
    for _ in range(args.naive_steps):
        afa_mat = a @ fisher @ a if afa else None
        scores = torch.empty(len(vt), dtype=torch.float64)
        for s in range(0, len(vt), chunk):
            x = vt[s: s + chunk]
            xa = (x.reshape(-1, k) @ a).reshape(x.shape)                    # Ṽ A
            inner = torch.linalg.inv(eye + torch.bmm(xa, x.transpose(1, 2)))  # (I + Ṽ A Ṽᵀ)⁻¹
            if afa:
                xafa = (x.reshape(-1, k) @ afa_mat).reshape(x.shape)
            else:
                xafa = ((xa.reshape(-1, k) @ fisher) @ a).reshape(x.shape)  # Ṽ A F A
            t = torch.bmm(xafa, x.transpose(1, 2))
            scores[s: s + chunk] = torch.bmm(t, inner).diagonal(dim1=1, dim2=2).sum(-1)
        scores[selected] = float("-inf")
        best = int(torch.argmax(scores))
        selected[best] = True
        picks.append(best)
        v = vt[best]
        av = a @ v.T
        a = a - av @ torch.linalg.solve(eye + v @ av, av.T)
    t2, c2 = time.perf_counter(), time.process_time()
    step, cpu_step = (t2 - t1) / args.naive_steps, (c2 - c1) / args.naive_steps
    return dict(init_s=t1 - t0, steps=args.naive_steps, step_s=step, total_s=(t1 - t0) + n * step,
                cpu_total_s=(c1 - c0) + n * cpu_step, picks=picks, measured=args.naive_steps >= n)


def worker(args):
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    cands, lab, fisher = make_data(args)
    if args.worker == "engine":
        out = run_engine(args, cands, lab, fisher)
    else:
        out = run_naive(args, cands, lab, fisher, afa=args.worker == "naive-afa")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out))


CASES = {  # name: (U, L, C, k, n, naive steps timed)
    "small": (1000, 100, 10, 1400, 40, 5),
    "setting2": (6750, 500, 10, 1402, 500, 5),
}


def run_method(method: str, args, threads: int, env) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method,
           f"--threads={threads}"] + [
        f"--{key.replace('_', '-')}={getattr(args, key)}"
        for key in ("U", "L", "C", "k", "n", "lam", "seed", "naive_steps", "storage")]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = dict(json.loads(line[7:]), load=f"{load:.1f}→{os.getloadavg()[0]:.1f}")
    print(f"# {method}, threads {out['threads']}: {out['total_s']:.1f} s wall, "
          f"{out['cpu_total_s']:.1f} s CPU, load {out['load']}", file=sys.stderr, flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=sorted(CASES) + ["custom"], default="setting2",
                   help="preset sizes (small: U=1000, L=100, C=10, k=1400, n=40; setting2: "
                        "U=6750, L=500, C=10, k=1402, n=500); custom: the flags below")
    p.add_argument("--U", type=int, default=6750)
    p.add_argument("--L", type=int, default=500)
    p.add_argument("--C", type=int, default=10)
    p.add_argument("--k", type=int, default=1402)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--naive-steps", type=int, default=5)
    p.add_argument("--storage", choices=["float32", "bfloat16"], default="float32",
                   help="the engine's storage dtype for the embeddings")
    p.add_argument("--threads", default="0",
                   help="comma-separated torch thread counts to run (0: torch default), e.g. 1,0")
    p.add_argument("--methods", default="engine,naive",
                   help="engine, naive, naive-afa (comma-separated)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        return worker(args)
    if args.case != "custom":
        args.U, args.L, args.C, args.k, args.n, args.naive_steps = CASES[args.case]

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(here)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    print(f"U={args.U}, L={args.L}, C={args.C}, k={args.k}, n={args.n}, lam={args.lam}, "
          f"oversample=1, engine storage {args.storage}; input V: U·C·k·4 B = "
          f"{args.U * args.C * args.k * 4 / 2**20:.0f} MiB; {os.cpu_count()} cores\n")
    print("| threads | method | init s | steps timed | s/step | total s (n steps) | CPU s (n steps) "
          "| peak RSS MiB | load avg | picks agree | wall / engine | CPU / engine |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        results = {m: run_method(m, args, threads, env) for m in args.methods.split(",")}
        base = results.get("engine")
        for method, r in results.items():
            agree = "—" if base is None or method == "engine" else (
                "yes" if r["picks"] == base["picks"][: len(r["picks"])] else "NO")
            total = f"{r['total_s']:.1f}" + ("" if r["measured"] else " (extrapolated)")
            ratio = f"**{r['total_s'] / base['total_s']:.1f}×**" if base else "—"
            cpu_ratio = f"{r['cpu_total_s'] / base['cpu_total_s']:.1f}×" if base else "—"
            extra = (f" ({r['rebuilds']} rebuilds)" if method == "engine" else "")
            print(f"| {r['threads']} | {method}{extra} | {r['init_s']:.2f} | {r['steps']} "
                  f"| {r['step_s']:.4f} | {total} | {r['cpu_total_s']:.1f} | {r['peak_rss_mb']:.0f} "
                  f"| {r['load']} | {agree} | {ratio} | {cpu_ratio} |", flush=True)


if __name__ == "__main__":
    main()
