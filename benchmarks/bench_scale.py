"""Benchmark: the greedy against pool size, for BAIT (d = 128, C = 10) and FisherMask (the
authors' narrow ResNet-18 on 28×28×1 images, k = 1,402 with the classifier weight).

Two parts, each printed as a markdown table:

``steps`` — the greedy step at every pool size, in this process on one shard: embeddings of the
real structure (BAIT: factored h, p with d = 128; FisherMask: the same factored block for the
classifier weight plus a dense block of 122 masked weights per class, as the narrow ResNet-18's
k = 1,402 mask has) with random values, a dense random F, and the step itself timed: the shard's
streaming update of P, Q for every candidate (``GreedyShard.apply`` + ``best``, float32 products
by default: ``--compute-dtype``) plus the driver's verified pick (``GreedyDriver.evaluate`` +
``accept``).  Reported: seconds per step, bytes per candidate (embeddings + the C×C float64
state), and two floors (``benchmarks/floors.py``, rates measured in this run with the step's
threads): the compute floor (the step's float32 and float64 flops over this machine's GEMM rate
for each dtype) and the bandwidth floor (the bytes one step reads: all embeddings, P and Q read
and written, the driver's k×k matrices; over a copy's bandwidth).  Sizes up to 500k (BAIT) and
200k (FisherMask) fit a 24 GB machine.

``rounds`` — whole selection rounds through the strategies (``select`` path of the
``RayExecutor`` with 1 and 2 shards, one thread each): BAIT with an identity body on 128-dim
inputs, FisherMask with a fresh narrow ResNet-18; seconds per phase, the greedy's initialisation
(P, Q for all candidates) apart from its steps, and the picks compared between 1 and 2 shards.

    python benchmarks/bench_scale.py --out docs/bench_scale.png
    python benchmarks/bench_scale.py --skip-rounds --bait-sizes 10000,100000,500000
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

try:
    import fishermask  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from floors import floors, machine, structured_step_counts  # noqa: E402  (beside this script)

C, D, K_DENSE = 10, 128, 122  # the narrow ResNet-18's mask: 1,280 classifier + 122 others


def make_embeddings(kind: str, size: int, seed: int):
    from fishermask.kernels.embeddings import FisherEmbeddings

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(size, D, generator=g)
    p = torch.softmax(torch.randn(size, C, generator=g) * 2, dim=1)
    dense = torch.randn(size, C, K_DENSE, generator=g) / K_DENSE ** 0.5 if kind == "fishermask" else None
    return FisherEmbeddings(features=h, probs=p, dense=dense)


def time_steps(kind: str, size: int, reps: int, seed: int, dtype=torch.float32) -> dict:
    """Seconds of one greedy step at pool ``size`` (median of ``reps``), bytes per candidate."""
    from fishermask.kernels._driver import GreedyDriver
    from fishermask.kernels._shard import GreedyShard

    emb = make_embeddings(kind, size, seed)
    k = emb.k
    g = torch.Generator().manual_seed(seed + 1)
    b = torch.randn(2 * k, k, generator=g, dtype=torch.float64) / k ** 0.5
    fisher = b.T @ b / 2
    del b
    driver = GreedyDriver(None, fisher, 50, lam=1.0, weighting="bait", k=k)
    shard = GreedyShard(emb, 0)
    shard.start(driver.fisher, driver.w_s, dtype)
    # P, Q stay as constructed (zeros): a step's cost does not depend on their values
    shard.scores.zero_()
    shard_s, driver_s, cpu_s = [], [], []
    for rep in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        ev = driver.evaluate(emb.rows(slice(rep, rep + 1)), rep, True)
        update = driver.accept(ev)
        t1 = time.perf_counter()
        shard.apply(*update)
        shard.best(True)
        t2, c2 = time.perf_counter(), time.process_time()
        driver_s.append(t1 - t0)
        shard_s.append(t2 - t1)
        cpu_s.append(c2 - c0)
    state = shard.p.element_size() * C * C * 2 + 8 + 1  # P, Q, score, selected flag
    per_cand = emb.nbytes() / size + state
    counts = structured_step_counts(size, C, D, K_DENSE if kind == "fishermask" else 0)
    return dict(kind=kind, size=size, k=k, shard_s=statistics.median(shard_s),
                driver_s=statistics.median(driver_s), cpu_s=statistics.median(cpu_s),
                bytes_per_candidate=per_cand, counts=counts,
                resident_gb=(emb.nbytes() + size * state) / 1e9)


def _timed_rounds():
    """Patch the round's greedy so that the shards' reset (initialisation) is timed apart."""
    import fishermask.strategies.fisher_round as fr
    from timing import TimedGroup  # benchmarks/timing.py, beside this script
    from fishermask.kernels._driver import run_greedy

    seconds = collections.defaultdict(float)

    def timed(group, *args, **kw):
        return run_greedy(TimedGroup(group, seconds), *args, **kw)

    fr.run_greedy = timed
    return seconds


def one_round(kind: str, size: int, shards: int, args, seconds) -> dict:
    from collections import OrderedDict

    from fishermask.config import ExecutionConfig
    from fishermask.data import ImageData
    from fishermask.execution.ray.executor import RayExecutor
    from fishermask.models import build_model
    from fishermask.strategies import SelectionContext, build_strategy

    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    shape = (1, 28, 28) if kind == "fishermask" else (1, 1, D)
    images = torch.randint(0, 256, (size,) + shape, dtype=torch.uint8, generator=g)
    pool = ImageData(images, torch.randint(0, C, (size,), generator=g), [str(c) for c in range(C)],
                     (0.5,), (0.25,))
    if kind == "fishermask":
        model = build_model("resnet18_narrow", C, 1).eval()
        params = dict(sparsity=args.sparsity, mask_samples=args.mask_samples)
    else:
        model = torch.nn.Sequential(OrderedDict(
            features=torch.nn.Flatten(), classifier=torch.nn.Linear(D, C, bias=False))).eval()
        params = dict(oversample=1)
    rng = np.random.default_rng(args.seed)
    labeled = np.sort(rng.choice(size, size=max(1, size // 10), replace=False))
    unlabeled = np.setdiff1d(np.arange(size), labeled)
    ex = RayExecutor(ExecutionConfig(backend="ray", shards=shards, cpus_per_shard=1, threads=1,
                                     device="cpu", batch_size=256, max_memory_gb=64))
    ex.bind(pool)
    try:
        ex.set_model(model)
        ctx = SelectionContext(model=model, executor=ex, labeled=labeled, unlabeled=unlabeled,
                               num_classes=C, rng=np.random.default_rng(args.seed))
        seconds.clear()
        t0 = time.perf_counter()
        sel = build_strategy(kind, **params).run_round(ctx, args.round_n)
        total = time.perf_counter() - t0
    finally:
        ex.close()
    d = sel.diagnostics
    steps = max(1, d["greedy_steps"])
    init = seconds["reset"] / max(1, 1 + d["greedy_rebuilds"])
    return dict(kind=kind, size=size, shards=shards, k=d["k"], total=total,
                mask=d.get("mask_seconds", 0.0), embed=d["gradients_seconds"],
                fisher=d["fisher_seconds"], greedy=d["greedy_seconds"], init=init,
                step=(d["greedy_seconds"] - seconds["reset"]) / steps,
                rebuilds=d["greedy_rebuilds"], picks=np.asarray(sel.indices))


def run_steps(args, rates: dict) -> list[dict]:
    rows = []
    dtype = getattr(torch, args.compute_dtype)
    for kind, sizes in (("bait", args.bait_sizes), ("fishermask", args.mask_sizes)):
        for size in [int(s) for s in sizes.split(",") if s]:
            load = os.getloadavg()[0]
            r = time_steps(kind, size, args.reps, args.seed, dtype)
            r.update(load=load, floor=floors({"step": r["counts"]}, rates)["step"])
            print(f"  {kind} {size}: {r['shard_s'] + r['driver_s']:.3f} s/step", file=sys.stderr,
                  flush=True)
            rows.append(r)
    print(f"\n### Seconds per greedy step against pool size (1 shard, {torch.get_num_threads()} "
          f"torch threads, {args.compute_dtype} products; GEMM {rates['r32'] / 1e9:.1f} GFLOP/s "
          f"float32, {rates['r64'] / 1e9:.1f} float64, copy {rates['bw'] / 1e9:.1f} GB/s)\n")
    print("| strategy | pool | k | bytes/candidate | resident GB | s/step (shard) | s/step (driver) "
          "| s/step | CPU s/step | floor s (compute / bandwidth) | CPU / compute floor | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        step = r["shard_s"] + r["driver_s"]
        comp, band = r["floor"]
        print(f"| {r['kind']} | {r['size']} | {r['k']} | {r['bytes_per_candidate']:.0f} "
              f"| {r['resident_gb']:.2f} | {r['shard_s']:.3f} | {r['driver_s']:.3f} | **{step:.3f}** "
              f"| {r['cpu_s']:.3f} | {comp:.4f} / {band:.4f} | {r['cpu_s'] / comp:.1f}× "
              f"| {r['load']:.1f} |")
    return rows


def run_rounds(args) -> list[dict]:
    import ray

    seconds = _timed_rounds()
    ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for kind, sizes in (("bait", args.bait_round_sizes), ("fishermask", args.mask_round_sizes)):
            for size in [int(s) for s in sizes.split(",") if s]:
                for shards in (1, 2):
                    load = os.getloadavg()[0]
                    r = dict(one_round(kind, size, shards, args, seconds), load=load)
                    print(f"  {kind} {size} × {shards}: {r['total']:.1f} s", file=sys.stderr,
                          flush=True)
                    rows.append(r)
    finally:
        ray.shutdown()
    print(f"\n### One selection round against pool size (Ray, 1 thread per shard, 10 % labeled, "
          f"query {args.round_n}, oversample 1 for BAIT)\n")
    print("| strategy | pool | k | shards | mask s | embed s | F s | greedy init s | s/step "
          "| round s | same picks as 1 shard | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    first = {}
    for r in rows:
        key = (r["kind"], r["size"])
        first.setdefault(key, r["picks"])
        same = "—" if r["shards"] == 1 else ("yes" if np.array_equal(first[key], r["picks"]) else "NO")
        print(f"| {r['kind']} | {r['size']} | {r['k']} | {r['shards']} | {r['mask']:.1f} "
              f"| {r['embed']:.1f} | {r['fisher']:.1f} | {r['init']:.1f} | {r['step']:.3f} "
              f"| **{r['total']:.1f}** | {same} | {r['load']:.1f} |")
    return rows


def plot(steps, rounds, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for kind, marker in (("bait", "o"), ("fishermask", "s")):
        rs = [r for r in steps if r["kind"] == kind]
        if rs:
            sizes = [r["size"] for r in rs]
            ax.plot(sizes, [r["shard_s"] + r["driver_s"] for r in rs], marker + "-", alpha=0.5,
                    label=f"{kind}: wall s/step, 1 shard")
            ax.plot(sizes, [r["cpu_s"] for r in rs], marker + "-", label=f"{kind}: CPU s/step")
            ax.plot(sizes, [r["floor"][0] for r in rs], marker + ":",
                    label=f"{kind}: compute floor")
        for shards in (1, 2):
            rr = [r for r in rounds if r["kind"] == kind and r["shards"] == shards]
            if rr:
                ax.plot([r["size"] for r in rr], [r["step"] for r in rr], marker + "--",
                        alpha=0.6, label=f"{kind}: wall s/step in a round, {shards} shard(s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pool size")
    ax.set_ylabel("seconds per greedy step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bait-sizes", default="10000,50000,100000,200000,500000")
    p.add_argument("--mask-sizes", default="10000,50000,100000,200000")
    p.add_argument("--reps", type=int, default=3, help="timed steps per size (median)")
    p.add_argument("--bait-round-sizes", default="5000,20000")
    p.add_argument("--mask-round-sizes", default="2000,10000")
    p.add_argument("--round-n", type=int, default=20, help="query size of the rounds")
    p.add_argument("--sparsity", type=float, default=0.002, help="k = 1,402 on resnet18_narrow")
    p.add_argument("--mask-samples", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0, help="torch threads of the step part")
    p.add_argument("--compute-dtype", choices=["float32", "float64"], default="float32",
                   help="dtype of the greedy's large products in the step part")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-rounds", action="store_true")
    p.add_argument("--out", default="", help="PNG of seconds per step against pool size")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    steps = [] if args.skip_steps else run_steps(args, machine(C * D + K_DENSE))
    rounds = [] if args.skip_rounds else run_rounds(args)
    if args.out:
        plot(steps, rounds, args.out)
        print(f"\nplot: {args.out}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
