"""Selection rounds on pools of precomputed features, up to millions of rows (``data.dataset:
features``): seconds per phase, the peak resident memory of the driver and of every shard actor,
and whether 1 and 2 shards pick the same rows.

    python benchmarks/bench_pool.py make --rows 1000000 --dim 128 --out /data/pool1m
    python benchmarks/bench_pool.py round --pool /data/pool1m --strategy bait --labeled 1000 \\
        --query 100 --oversample 2 --shards 1 2
    python benchmarks/bench_pool.py curve --sizes 10000,100000,1000000 --dim 128 \\
        --strategies bait,margin,kcenter,badge,fishermask --shards 1 2 --work /data/curve \\
        --plot docs/bench_pool_curve.png

``make`` writes ``features.npy`` (float32 [N, d], class-conditional Gaussians so that a linear
head learns something), ``labels.npy`` and a 10,000-row test set, chunk by chunk (the array is
never whole in memory).  ``round`` runs one selection round per shard count, each in a fresh
process (its own peak memory): the model (a linear head, or an MLP for FisherMask) is trained on
``--labeled`` rows, then the strategy picks ``--query`` rows.  ``curve`` repeats that over pool
sizes and strategies and draws seconds per round against pool size.  With ``--jsonl FILE`` each
round's result is appended to FILE as it finishes; ``table --jsonl A,B --plot P`` prints and
plots the rounds of several such files (a long study in parts).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make(rows: int, dim: int, classes: int, out: Path, seed: int = 0, test: int = 10_000,
         chunk: int = 200_000) -> None:
    """features.npy / labels.npy / test_features.npy / test_labels.npy in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.0, (classes, dim)).astype(np.float32)
    for name, n in (("", rows), ("test_", test)):
        x = np.lib.format.open_memmap(out / f"{name}features.npy", mode="w+",
                                      dtype=np.float32, shape=(n, dim))
        y = np.empty(n, dtype=np.int64)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            yc = rng.integers(0, classes, m)
            x[start:start + m] = means[yc] + rng.normal(0, 1.5, (m, dim)).astype(np.float32)
            y[start:start + m] = yc
        x.flush()
        del x
        np.save(out / f"{name}labels.npy", y)
    print(f"wrote {rows} x {dim} features ({rows * dim * 4 / 1e9:.2f} GB) and {test} test rows "
          f"to {out}")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_round(args) -> dict:
    """One round in this process (a child of ``round``/``curve``): prints a JSON line."""
    import torch

    from fishermask.config import from_dict
    from fishermask.data import load_experiment_data
    from fishermask.execution import make_executor
    from fishermask.models import model_from_params
    from fishermask.strategies import SelectionContext, build_strategy
    from fishermask.training import train_model

    if args.threads:  # 0: torch's default
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pool = Path(args.pool)
    strategy = {"name": args.strategy}
    if args.strategy in ("bait", "fishermask"):
        strategy["oversample"] = args.oversample
    if args.strategy == "fishermask":
        strategy.update(sparsity=args.sparsity, mask_samples=1024, fisher_target="diag")
    cfg = from_dict({
        "data": {"dataset": "features", "features": str(pool / "features.npy"),
                 "labels": str(pool / "labels.npy"),
                 "test_features": str(pool / "test_features.npy"),
                 "test_labels": str(pool / "test_labels.npy")},
        "model": {"name": "mlp" if args.strategy == "fishermask" else "linear",
                  "hidden": [args.hidden]},
        "train": {"epochs": 30, "batch_size": 128},
        "budget": {"initial": args.labeled, "query": args.query, "rounds": 1},
        "strategy": strategy,
        "execution": {"shards": args.shards, "backend": "ray" if args.shards > 1 else "auto",
                      "batch_size": 4096, "max_memory_gb": 64, "threads": args.threads or None,
                      "cpus_per_shard": 1, "device": args.device,
                      "gpus_per_shard": 1 if args.device == "cuda" and args.shards > 1 else 0}})
    data = load_experiment_data(cfg.data, 0)
    t_load = time.perf_counter()
    rng = np.random.default_rng(0)
    labeled = np.sort(rng.choice(len(data.pool), args.labeled, replace=False))
    model = model_from_params(cfg.model, data.pool.num_classes, data.pool.in_channels)
    train_model(model, data.pool, labeled, cfg.train, augment=False,
                device=torch.device(args.device), generator=torch.Generator().manual_seed(0))
    t_train = time.perf_counter()
    with make_executor(cfg.execution) as ex:
        ex.bind(data.pool)
        t_bind = time.perf_counter()
        ex.set_model(model)
        ctx = SelectionContext(model=ex.model, executor=ex, labeled=labeled,
                               unlabeled=np.setdiff1d(np.arange(len(data.pool)), labeled),
                               num_classes=data.pool.num_classes, rng=np.random.default_rng(1))
        sel = build_strategy(args.strategy, **cfg.strategy.params).run_round(ctx, args.query)
        t_sel = time.perf_counter()
        shards = ([s["peak_rss_mb"] for s in ex.shard_stats()] if hasattr(ex, "shard_stats")
                  else [])
    phases = {k: round(v, 2) for k, v in sel.diagnostics.items() if k.endswith("_seconds")}
    return {"strategy": args.strategy, "rows": len(data.pool) + len(data.test), "pool": len(data.pool),
            "dim": data.pool.in_channels, "shards": args.shards, "load_s": t_load - t0,
            "train_s": t_train - t_load, "bind_s": t_bind - t_train, "select_s": t_sel - t_bind,
            "phases": phases, "driver_peak_mb": _peak_mb(), "shard_peak_mb": shards,
            "picks": [int(i) for i in sel.indices]}


def _child(args, shards: int, pool: Path, strategy: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_one", "--pool", str(pool),
           "--strategy", strategy, "--labeled", str(args.labeled), "--query", str(args.query),
           "--oversample", str(args.oversample), "--shards", str(shards),
           "--threads", str(args.threads), "--sparsity", str(args.sparsity),
           "--hidden", str(args.hidden), "--device", args.device]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        raise SystemExit(f"round failed ({strategy}, {shards} shards):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def _save(args, result: dict) -> dict:
    """``result`` appended to ``--jsonl`` (when given): ``table`` merges such files."""
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


def _table(results: list[dict]) -> None:
    one = {(r["strategy"], r["pool"]): r["picks"] for r in results if r["shards"] == 1}
    print("\n| strategy | pool | shards | load s | train s | bind s | select s | phases (s) | "
          "driver peak MB | shard peak MB | same picks as 1 shard |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|")
    for r in results:
        ref = one.get((r["strategy"], r["pool"]))
        same = "—" if r["shards"] == 1 or ref is None else ("yes" if ref == r["picks"] else "**no**")
        phases = ", ".join(f"{k[:-8]} {v}" for k, v in r["phases"].items())
        print(f"| {r['strategy']} | {r['pool']:,} | {r['shards']} | {r['load_s']:.1f} | "
              f"{r['train_s']:.1f} | {r['bind_s']:.1f} | **{r['select_s']:.1f}** | {phases} | "
              f"{r['driver_peak_mb']:.0f} | {', '.join(f'{m:.0f}' for m in r['shard_peak_mb']) or '—'}"
              f" | {same} |")


def _plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, am) = plt.subplots(1, 2, figsize=(11, 4))
    for (strategy, shards) in sorted({(r["strategy"], r["shards"]) for r in results}):
        rs = sorted((r for r in results if (r["strategy"], r["shards"]) == (strategy, shards)),
                    key=lambda r: r["pool"])
        style = "-" if shards == 1 else "--"
        ax.plot([r["pool"] for r in rs], [r["select_s"] for r in rs], style, marker="o",
                label=f"{strategy}, {shards} shard{'s' if shards > 1 else ''}")
        am.plot([r["pool"] for r in rs], [r["driver_peak_mb"] for r in rs], style, marker="o")
    for a, label in ((ax, "seconds per selection round"), (am, "driver peak RSS (MB)")):
        a.set_xscale("log")
        a.set_xlabel("pool size (rows)")
        a.set_ylabel(label)
        a.grid(True, alpha=0.3)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["make", "round", "curve", "table", "_one"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--out", default="pool")
    ap.add_argument("--pool", default="pool")
    ap.add_argument("--strategy", default="bait")
    ap.add_argument("--strategies", default="bait,margin,kcenter,badge,fishermask")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--work", default="pools")
    ap.add_argument("--plot", default="")
    ap.add_argument("--labeled", type=int, default=1000)
    ap.add_argument("--query", type=int, default=100)
    ap.add_argument("--oversample", type=int, default=2)
    ap.add_argument("--sparsity", type=float, default=0.08, help="FisherMask on the MLP")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the training and the shards)")
    ap.add_argument("--jsonl", default="", help="round/curve: append each round's result here; "
                    "table: the files (comma-separated) to print and plot")
    args = ap.parse_args()
    if args.what == "make":
        make(args.rows, args.dim, args.classes, Path(args.out))
    elif args.what == "_one":
        args.shards = args.shards[0]
        print(json.dumps(one_round(args)))
    elif args.what == "table":
        results = [json.loads(line) for f in args.jsonl.split(",")
                   for line in Path(f).read_text().splitlines() if line.strip()]
        _table(results)
        if args.plot:
            _plot(results, args.plot)
    elif args.what == "round":
        results = [_save(args, _child(args, s, Path(args.pool), args.strategy))
                   for s in args.shards]
        _table(results)
    else:
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            pool = Path(args.work) / f"pool{size}_{args.dim}"
            if not (pool / "features.npy").exists():
                make(size, args.dim, args.classes, pool)
            for strategy in args.strategies.split(","):
                for shards in args.shards:
                    results.append(_save(args, _child(args, shards, pool, strategy)))
                    r = results[-1]
                    print(f"  {strategy} pool {size:,} x {shards}: {r['select_s']:.1f} s, "
                          f"driver {r['driver_peak_mb']:.0f} MB", flush=True)
        _table(results)
        if args.plot:
            _plot(results, args.plot)


if __name__ == "__main__":
    main()
