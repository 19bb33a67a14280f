"""Benchmark: low-rank greedy (fishermask.selection.fisher_greedy) vs per-step recomputation.

The baseline is the public BAIT/FisherMask select loop: at every step, for every candidate,
recompute Ṽ_x A F A Ṽ_xᵀ and (I + Ṽ_x A Ṽ_xᵀ)⁻¹ in float64 (chunks of 200 candidates, Ṽ_x A
evaluated once and reused), take the argmax, and Woodbury-update A.  ``naive-afa`` is a stronger
variant that forms AFA once per step (2 instead of 3 big GEMMs per candidate chunk).  The baselines
run only ``--naive-steps`` steps; their total is extrapolated as init + steps·(mean time per step),
and their picks are checked against the first picks of the low-rank run.

Each method runs in its own subprocess so that its peak resident set (ru_maxrss) is its own.  Wall
time and process CPU time are both reported, with the 1-minute load average before→after each
method: on a shared machine the wall times (and more so with several torch threads, whose OpenMP
barriers stall when a core is taken) depend on the other load; ``--threads 1`` with CPU time is the
steadiest comparison.  The low-rank engine runs many short batched kernels per step, so with 2
threads and a busy second core it slows down several-fold (one busy competitor: 0.20 → 0.78 s/step
here); ``OMP_WAIT_POLICY=PASSIVE`` or one thread avoids that.
Default sizes: Setting 2 with the authors' narrow ResNet-18 (U=6750, L=500, C=10, k=1402, n=500).

    python benchmarks/bench_greedy.py [--U 6750 --L 500 --C 10 --k 1402 --n 500 --naive-steps 10]
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


def run_lowrank(args, cands, lab, fisher):
    from fishermask.selection import GreedyState, drive_greedy, greedy_init

    t0, c0 = time.perf_counter(), time.process_time()
    init = greedy_init(lab, fisher, args.n, lam=args.lam)
    state = GreedyState(cands, 0, init)
    t1, c1 = time.perf_counter(), time.process_time()
    picks = drive_greedy([state], args.n, 1)
    t2, c2 = time.perf_counter(), time.process_time()
    return dict(init_s=t1 - t0, steps=args.n, step_s=(t2 - t1) / args.n, total_s=t2 - t0,
                cpu_total_s=c2 - c0, picks=picks.tolist(), measured=True)


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
    if args.worker == "lowrank":
        out = run_lowrank(args, cands, lab, fisher)
    else:
        out = run_naive(args, cands, lab, fisher, afa=args.worker == "naive-afa")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--U", type=int, default=6750)
    p.add_argument("--L", type=int, default=500)
    p.add_argument("--C", type=int, default=10)
    p.add_argument("--k", type=int, default=1402)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--naive-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--methods", default="lowrank,naive,naive-afa")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(here)] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    results = {}
    for method in args.methods.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", method] + [
            f"--{key.replace('_', '-')}={getattr(args, key)}"
            for key in ("U", "L", "C", "k", "n", "lam", "seed", "naive_steps", "threads")]
        load = os.getloadavg()[0]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        results[method] = dict(json.loads(line[7:]), load=f"{load:.1f}→{os.getloadavg()[0]:.1f}")
        print(f"# {method} done: {results[method]['total_s']:.1f} s", file=sys.stderr)

    base = results.get("lowrank")
    print(f"\nU={args.U}, L={args.L}, C={args.C}, k={args.k}, n={args.n}, lam={args.lam}, "
          f"oversample=1, torch threads={next(iter(results.values()))['threads']}, "
          f"big arrays: low-rank 3·U·C·k·4 B = {3 * args.U * args.C * args.k * 4 / 2**20:.0f} MiB, "
          f"naive U·C·k·8 B = {args.U * args.C * args.k * 8 / 2**20:.0f} MiB\n")
    print("| method | init s | steps timed | s/step | total s (n steps) | CPU s (n steps) "
          "| peak RSS MiB | load avg | picks agree | wall / low-rank | CPU / low-rank |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, r in results.items():
        agree = "—" if base is None or method == "lowrank" else (
            "yes" if r["picks"] == base["picks"][: len(r["picks"])] else "NO")
        total = f"{r['total_s']:.1f}" + ("" if r["measured"] else " (extrapolated)")
        ratio = f"{r['total_s'] / base['total_s']:.1f}×" if base else "—"
        cpu_ratio = f"{r['cpu_total_s'] / base['cpu_total_s']:.1f}×" if base else "—"
        print(f"| {method} | {r['init_s']:.2f} | {r['steps']} | {r['step_s']:.4f} | {total} "
              f"| {r['cpu_total_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['load']} | {agree} "
              f"| {ratio} | {cpu_ratio} |")


if __name__ == "__main__":
    main()
