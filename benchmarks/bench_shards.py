"""Benchmark: one FisherMask selection round on Ray pool-shard actors vs in-process.

(1) ``round``: a fresh network on synthetic 28×28 images (pool 6000, query 200 by default) with
    the LocalExecutor (one thread), the RayExecutor with 1 shard and with 2 shards (one thread per
    shard): seconds per phase and the 2-vs-1-shard ratio; the picks are checked to be identical.
(2) ``curve``: seconds per round against the pool size for 1 and 2 shards (a table, and a PNG plot
    with ``--out``).

Prints markdown tables; asserts nothing.  Executor start-up (actors, pool to the object store) is
reported apart: it happens once per run, not per round.

    python benchmarks/bench_shards.py                                   # both, ~8 min on 2 cores
    python benchmarks/bench_shards.py --skip-curve --query 500          # the full-size round
    python benchmarks/bench_shards.py --skip-round --sizes 1000,2000,5000,10000,20000,50000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Ray starts its workers with nice 15; on a shared machine that would handicap the shards against
# the in-process baseline, so they run at the driver's priority here.
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PHASES = ("mask", "gradients", "fisher", "greedy")


def make_pool(n: int, classes: int, size: int, seed: int):
    from fishermask.data import ImageData

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    return ImageData(images, torch.randint(0, classes, (n,), generator=g),
                     [str(c) for c in range(classes)], (0.5,), (0.25,))


def make_executor(kind: str, args):
    from fishermask.config import ExecutionConfig
    from fishermask.execution.local import LocalExecutor
    from fishermask.execution.ray.executor import RayExecutor

    if kind == "local":
        return LocalExecutor(device="cpu", batch_size=args.batch_size, max_memory_gb=64)
    return RayExecutor(ExecutionConfig(backend="ray", shards=int(kind), cpus_per_shard=1,
                                       threads=1, device="cpu", batch_size=args.batch_size,
                                       max_memory_gb=64))


def one_round(kind: str, pool_size: int, query: int, args) -> dict:
    """Start an executor, bind a fresh pool, run one FisherMask selection; seconds per phase."""
    from fishermask.models import build_model
    from fishermask.strategies import SelectionContext, build_strategy

    pool = make_pool(pool_size, args.classes, args.image_size, args.seed)
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.classes, 1).eval()
    rng = np.random.default_rng(args.seed)
    labeled = np.sort(rng.choice(pool_size, size=max(1, int(args.labeled * pool_size)),
                                 replace=False))
    unlabeled = np.setdiff1d(np.arange(pool_size), labeled)
    strategy = build_strategy("fishermask", sparsity=args.sparsity,
                              mask_samples=args.mask_samples, fisher_target=args.fisher_target)
    t0 = time.perf_counter()
    ex = make_executor(kind, args)
    ex.bind(pool)
    t1 = time.perf_counter()
    try:
        ex.set_model(model)
        ctx = SelectionContext(model=model, executor=ex, labeled=labeled, unlabeled=unlabeled,
                               num_classes=args.classes, rng=np.random.default_rng(args.seed))
        t2 = time.perf_counter()
        sel = strategy.run_round(ctx, query)
        t3 = time.perf_counter()
    finally:
        ex.close()
    out = {"setup": t1 - t0, "round": t3 - t2, "picks": sel.indices, "k": sel.diagnostics["k"]}
    out.update({p: sel.diagnostics[f"{p}_seconds"] for p in PHASES})
    return out


def bench_round(args) -> None:
    kinds = [("local", "LocalExecutor, 1 thread"), ("1", "Ray, 1 shard × 1 thread"),
             ("2", "Ray, 2 shards × 1 thread")]
    res = {kind: one_round(kind, args.pool, args.query, args) for kind, _ in kinds}
    print(f"\n### One FisherMask round: {args.model}, pool {args.pool} ({args.image_size}×"
          f"{args.image_size}), {int(args.labeled * args.pool)} labeled, query {args.query}, "
          f"k {res['local']['k']}, F {args.fisher_target}, mask samples {args.mask_samples}\n")
    print("| executor | mask s | gradients s | fisher s | greedy s | round s | start-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, label in kinds:
        r = res[kind]
        print(f"| {label} | " + " | ".join(f"{r[p]:.1f}" for p in PHASES)
              + f" | **{r['round']:.1f}** | {r['setup']:.1f} |")
    same = all(np.array_equal(res[k]["picks"], res["local"]["picks"]) for k, _ in kinds)
    print(f"\n2 shards vs 1 shard: **{res['1']['round'] / res['2']['round']:.2f}×**; "
          f"2 shards vs LocalExecutor: {res['local']['round'] / res['2']['round']:.2f}×; "
          f"identical picks: {'yes' if same else 'NO'}")


def bench_curve(args) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = []
    for size in sizes:
        r1, r2 = one_round("1", size, args.curve_query, args), one_round("2", size,
                                                                         args.curve_query, args)
        rows.append((size, r1, r2))
        print(f"  pool {size}: 1 shard {r1['round']:.1f} s, 2 shards {r2['round']:.1f} s",
              flush=True)
    print(f"\n### Seconds per FisherMask round against pool size: {args.model}, "
          f"{args.image_size}×{args.image_size}, {args.labeled:.0%} labeled, query "
          f"{args.curve_query}, k {rows[0][1]['k']}, F {args.fisher_target}\n")
    print("| pool | shards | mask s | gradients s | fisher s | greedy s | round s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r1, r2 in rows:
        for shards, r in ((1, r1), (2, r2)):
            ratio = f"{r1['round'] / r2['round']:.2f}×" if shards == 2 else ""
            print(f"| {size} | {shards} | " + " | ".join(f"{r[p]:.1f}" for p in PHASES)
                  + f" | {r['round']:.1f} | {ratio} |")
    if args.out:
        plot(rows, args)
        print(f"\nplot: {args.out}")


def plot(rows, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s for s, _, _ in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for idx, label in ((1, "1 shard"), (2, "2 shards")):
        ax.plot(sizes, [r[idx]["round"] for r in rows], "o-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("pool size")
    ax.set_ylabel("seconds per selection round")
    ax.set_title(f"FisherMask round, {args.model}, query {args.curve_query}, 1 thread per shard",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18_narrow", choices=["resnet18_narrow", "cnn_small"])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--sparsity", type=float, default=None,
                   help="default: 0.002 (resnet18_narrow, k=1402) or 0.02 (cnn_small, k=1883)")
    p.add_argument("--mask-samples", type=int, default=1024, help="the strategy default")
    p.add_argument("--fisher-target", default="dense", choices=["dense", "diag"])
    p.add_argument("--labeled", type=float, default=0.1, help="labeled fraction of the pool")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pool", type=int, default=6000)
    p.add_argument("--query", type=int, default=200)
    p.add_argument("--sizes", default="1000,5000",
                   help="pool sizes of the curve (up to 1000,2000,5000,10000,20000,50000)")
    p.add_argument("--curve-query", type=int, default=50)
    p.add_argument("--out", default="bench_shards.png", help="PNG of the curve ('' for none)")
    p.add_argument("--skip-round", action="store_true")
    p.add_argument("--skip-curve", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.sparsity is None:
        args.sparsity = 0.002 if args.model == "resnet18_narrow" else 0.02
    import ray

    torch.set_num_threads(1)  # the LocalExecutor baseline and the driver: one thread
    ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    try:
        if not args.skip_round:
            bench_round(args)
        if not args.skip_curve:
            bench_curve(args)
    finally:
        ray.shutdown()
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
