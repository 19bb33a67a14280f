"""Benchmark: many classes and the top-c Fisher (``fisher_classes: top``, ``top_c: c``).

``objective`` — on small features pools (BAIT's factored last-layer embeddings, random h and
softmax logits), the exact greedy's picks (every class) against the top-c greedy's (each V_x
restricted to its c most probable classes, renormalised; F and M restricted alike), both scored
with the *exact* objective tr(M_S⁻¹ F) (every class).  Reported per (C, c): the mean and worst
ratio objective(top-c picks) / objective(exact picks) over the seeds (1 = as good as exact BAIT),
and the mean share of picks in common.

``speed`` — one greedy step and the initialisation at C classes (default 100) on a features pool
(d = 32, so k = C·d = 3,200), exact (c = C) and top-c: bytes per candidate (the stored (h, p) and
top classes, and the float64 c×c state P, Q, score), the initialisation (P, Q for every candidate,
float32 products), and the median seconds of a step split into the shards' update and the driver's
verified pick (one thread by default).

    python benchmarks/bench_top_c.py objective --classes 10,100 --top-c 1,2,3,5,10
    python benchmarks/bench_top_c.py speed --classes 100 --top-c 100,10,5 --sizes 1000,5000,50000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

try:
    import fishermask  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pool(size: int, classes: int, d: int, seed: int, conf: float = 3.0):
    """Factored embeddings (h, p) of a random features pool: h ~ N(0, I), logits ~ conf·N(0, 1)."""
    from fishermask.kernels.embeddings import FisherEmbeddings

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(size, d, generator=g)
    p = torch.softmax(conf * torch.randn(size, classes, generator=g), dim=1)
    return FisherEmbeddings(features=h, probs=p)


def pool_fisher(emb, block: int = 256) -> torch.Tensor:
    """F = Σ_x V_xᵀV_x / |X|, block by block (the factored gram's temporaries grow as C²·d)."""
    total = sum(emb.rows(slice(s, s + block)).gram() for s in range(0, len(emb), block))
    return total / len(emb)


def exact_objective(emb, picks, num_u: int, n: int, lam: float) -> float:
    """tr(M_S⁻¹ F) with every class: F over the pool, labeled = rows num_u…, bait weights."""
    num_l = len(emb) - num_u
    w_l, w_s = 1.0 / (num_l + n), n / (num_l + n)
    m = lam * torch.eye(emb.k, dtype=torch.float64)
    if num_l:
        m += w_l * emb.rows(slice(num_u, None)).gram()
    m += w_s * emb.rows(torch.as_tensor(picks)).gram()
    return float(torch.trace(torch.linalg.solve(m, pool_fisher(emb))))


def run_objective(args) -> None:
    from fishermask.kernels.embeddings import restrict_top
    from fishermask.kernels.greedy import fisher_greedy

    print(f"\n### Top-c picks against exact BAIT (U={args.U}, L={args.L}, d={args.d}, "
          f"n={args.n}, λ={args.lam}, oversample 2, {args.seeds} seeds)\n")
    print("| C | c | objective ratio, mean | worst | picks in common |")
    print("|---:|---:|---:|---:|---:|")
    for classes in [int(c) for c in args.classes.split(",")]:
        ratios: dict[int, list] = {}
        common: dict[int, list] = {}
        for seed in range(args.seeds):
            emb = pool(args.U + args.L, classes, args.d, seed)
            cand, lab = emb.rows(slice(0, args.U)), emb.rows(slice(args.U, None))
            exact = fisher_greedy(cand, lab, pool_fisher(emb), args.n, lam=args.lam,
                                  oversample=2).tolist()
            best = exact_objective(emb, exact, args.U, args.n, args.lam)
            for c in [int(x) for x in args.top_c.split(",") if int(x) <= classes]:
                top = restrict_top(emb, c)
                picks = fisher_greedy(top.rows(slice(0, args.U)), top.rows(slice(args.U, None)),
                                      pool_fisher(top), args.n, lam=args.lam,
                                      oversample=2).tolist()
                ratios.setdefault(c, []).append(
                    exact_objective(emb, picks, args.U, args.n, args.lam) / best)
                common.setdefault(c, []).append(len(set(picks) & set(exact)) / args.n)
        for c, r in ratios.items():
            print(f"| {classes} | {c} | {statistics.mean(r):.4f} | {max(r):.4f} "
                  f"| {statistics.mean(common[c]):.0%} |", flush=True)


def time_steps(size: int, classes: int, c: int, args) -> dict:
    """Init and step seconds of the engine at C = ``classes`` with top-c rows (c = C: exact)."""
    from fishermask.kernels._driver import GreedyDriver
    from fishermask.kernels._shard import GreedyShard
    from fishermask.kernels.embeddings import restrict_top

    emb = pool(size + args.L, classes, args.d, 0)
    emb = emb if c == classes else restrict_top(emb, c)
    fisher = pool_fisher(emb)
    cand = emb.rows(slice(0, size))
    t0 = time.perf_counter()
    driver = GreedyDriver(emb.rows(slice(size, None)), fisher, 50, lam=args.lam, weighting="bait",
                          k=emb.k, compute_dtype=torch.float32)
    shard = GreedyShard(cand, 0)
    shard.start(driver.fisher, driver.w_s, torch.float32)
    report = shard.reset(driver.a, True, None, driver.low_rank)
    init = time.perf_counter() - t0
    shard_s, driver_s = [], []
    for _ in range(args.reps):
        t1 = time.perf_counter()
        update = driver.accept(driver.evaluate(report[2], report[1], True))
        t2 = time.perf_counter()
        report = shard.advance(update, True)
        driver_s.append(t2 - t1)
        shard_s.append(time.perf_counter() - t2)
    rows = emb.num_rows
    state = 2 * rows * rows * 8 + 8 + 1
    return dict(size=size, classes=classes, c=c, k=emb.k, init=init,
                shard=statistics.median(shard_s), driver=statistics.median(driver_s),
                emb_bytes=cand.nbytes() / size, state=state,
                resident_gb=(cand.nbytes() + size * state) / 1e9)


def run_speed(args) -> None:
    rows = []
    for classes in [int(c) for c in args.classes.split(",")]:
        for c in [int(x) for x in args.top_c.split(",") if int(x) <= classes]:
            for size in [int(s) for s in args.sizes.split(",")]:
                if c == classes and size > args.max_exact:
                    continue  # the exact C×C state and steps: too large for this run
                load = os.getloadavg()[0]
                r = dict(time_steps(size, classes, c, args), load=load)
                print(f"  C={classes} c={c} U={size}: {r['shard'] + r['driver']:.3f} s/step",
                      file=sys.stderr, flush=True)
                rows.append(r)
    print(f"\n### Many classes: one greedy step ({torch.get_num_threads()} torch threads, float32 "
          f"products, d={args.d}, L={args.L}, median of {args.reps} steps)\n")
    print("| C | c | pool | k | embedding B/cand. | state B/cand. | resident GB | init s "
          "| s/step (shard) | s/step (driver) | s/step | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['classes']} | {r['c']}{' (exact)' if r['c'] == r['classes'] else ''} "
              f"| {r['size']:,} | {r['k']:,} | {r['emb_bytes']:.0f} | {r['state']:,} "
              f"| {r['resident_gb']:.2f} | {r['init']:.2f} | {r['shard']:.3f} | {r['driver']:.3f} "
              f"| **{r['shard'] + r['driver']:.3f}** | {r['load']:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["objective", "speed"])
    p.add_argument("--classes", default=None, help="C values (objective: 10,100; speed: 100)")
    p.add_argument("--top-c", default=None, help="c values (c = C is exact BAIT)")
    p.add_argument("--U", type=int, default=300, help="objective: candidates")
    p.add_argument("--L", type=int, default=20, help="labeled points")
    p.add_argument("--d", type=int, default=None, help="feature dimension (objective 8, speed 32)")
    p.add_argument("--n", type=int, default=10, help="objective: picks")
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--sizes", default="1000,5000,50000", help="speed: pool sizes")
    p.add_argument("--max-exact", type=int, default=5000, help="speed: largest exact pool")
    p.add_argument("--reps", type=int, default=5, help="speed: timed steps (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    speed = args.part == "speed"
    args.classes = args.classes or ("100" if speed else "10,100")
    args.top_c = args.top_c or ("100,10,5" if speed else "1,2,3,5,10")
    args.d = args.d or (32 if speed else 8)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    (run_speed if speed else run_objective)(args)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
