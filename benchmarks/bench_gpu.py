"""GPU benchmark at the paper's scale (run through ``benchmarks/gpu.sh``): seconds and peak memory.

1. ``greedy``: ``fisher_greedy`` on structured embeddings shaped like ResNet-18's FisherMask mask
   (k ≈ 22k: the 512-dim classifier weight factored, the rest dense), Setting 2's pool of 6,750
   candidates, 500 labeled, 500 picks, dense F.
2. ``round``: one FisherMask round (``select("fishermask")``: mask, masked embeddings, F, greedy)
   with a fresh ``resnet18`` (11.2M weights, sparsity 0.002: k ≈ 22k) on 6,750 + 500 random
   32×32×3 images, 500 picks.
3. ``bait``: ``select("bait")`` on a 1M-sample pool of 512-dim features through an identity body
   and a bias-free ``Linear(512, 10)``, 1,000 labeled, 100 picks (oversample 2).
4. ``features``: the whole BAIT round of ``benchmarks/bench_pool.py`` on a features pool on disk
   (``data.dataset: features``, 1M × 128 rows written to a temporary folder first): a linear head
   trained on 1,000 labels, 100 picks with oversample 2.
5. ``features_fishermask``: the same round with FisherMask on an MLP 128 → 256 → 10 (sparsity
   0.08: k = 2,847), the largest point of the pool-size curve (its candidates' embeddings need
   about 27 GB of host memory at 1M, more than the 2-core development machine has).

Every size is a flag so that a test runs each path on the CPU at tiny sizes.  Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU, the process's peak resident set on the CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import OrderedDict

import numpy as np
import torch

try:
    import fishermask  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def bench_greedy(args, device) -> dict:
    from fishermask.kernels.embeddings import FisherEmbeddings
    from fishermask.kernels.greedy import fisher_greedy

    g = torch.Generator(device=device).manual_seed(0)
    c, d, k_dense = args.classes, args.greedy_d, args.greedy_k - args.classes * args.greedy_d

    def emb(n):
        h = torch.randn(n, d, generator=g, device=device)
        p = torch.softmax(2 * torch.randn(n, c, generator=g, device=device), dim=1)
        r = torch.randn(n, c, k_dense, generator=g, device=device) / k_dense ** 0.5
        return FisherEmbeddings(features=h, probs=p, dense=r)

    cand, lab = emb(args.greedy_pool), emb(args.greedy_labeled)
    fisher = (lab.gram() + cand.rows(slice(0, min(len(cand), 2000))).gram()) / (
        len(lab) + min(len(cand), 2000))
    fisher.diagonal().add_(1e-3)
    _peak_reset(device)
    t0 = time.perf_counter()
    picks, info = fisher_greedy(cand, lab, fisher, args.greedy_n, lam=1.0, return_info=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return dict(seconds=time.perf_counter() - t0, peak_gb=_peak_gb(device), picks=len(picks),
                detail=f"U={len(cand)}, L={len(lab)}, k={cand.k}, rebuilds={info['rebuilds']}")


def bench_round(args, device) -> dict:
    from fishermask.models import build_model
    from fishermask.strategies import select

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    size = args.round_pool + args.round_labeled
    pool = torch.randn(size, 3, args.image_size, args.image_size, generator=g)
    model = build_model(args.model, args.classes, 3).eval()
    labeled = np.arange(args.round_labeled)
    _peak_reset(device)
    t0 = time.perf_counter()
    sel = select("fishermask", model, pool, labeled, n=args.round_n, seed=0, device=str(device),
                 sparsity=args.sparsity, mask_samples=args.mask_samples, max_memory_gb=1000,
                 batch_size=args.batch_size)
    d = sel.diagnostics
    phases = ", ".join(f"{p} {d.get(p + '_seconds', 0.0):.1f} s"
                       for p in ("mask", "gradients", "fisher", "greedy"))
    return dict(seconds=time.perf_counter() - t0, peak_gb=_peak_gb(device), picks=len(sel.indices),
                detail=f"{args.model}, pool {args.round_pool}, L={args.round_labeled}, k={d['k']}, "
                       f"{phases}, rebuilds={d['greedy_rebuilds']}")


def bench_bait(args, device) -> dict:
    from fishermask.strategies import select

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    pool = torch.randn(args.bait_pool, args.bait_d, generator=g)
    model = torch.nn.Sequential(OrderedDict(
        features=torch.nn.Identity(),
        classifier=torch.nn.Linear(args.bait_d, args.classes, bias=False))).eval()
    labeled = np.arange(args.bait_labeled)
    _peak_reset(device)
    t0 = time.perf_counter()
    sel = select("bait", model, pool, labeled, n=args.bait_n, seed=0, device=str(device),
                 lam=args.bait_lam, max_memory_gb=1000, batch_size=args.bait_batch)
    d = sel.diagnostics
    return dict(seconds=time.perf_counter() - t0, peak_gb=_peak_gb(device), picks=len(sel.indices),
                detail=f"pool {args.bait_pool}, d={args.bait_d}, L={args.bait_labeled}, "
                       f"k={d['k']}, F {d['fisher_seconds']:.1f} s, greedy "
                       f"{d['greedy_seconds']:.1f} s, rebuilds={d['greedy_rebuilds']}")


def bench_features(args, device, strategy: str = "bait") -> dict:
    import tempfile
    from pathlib import Path

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_pool

    with tempfile.TemporaryDirectory() as tmp:
        bench_pool.make(args.features_pool, args.features_d, args.classes, Path(tmp),
                        test=min(10_000, args.features_pool))
        ns = argparse.Namespace(pool=tmp, strategy=strategy, labeled=args.features_labeled,
                                query=args.features_n, oversample=2, shards=1, threads=0,
                                sparsity=args.features_sparsity, hidden=args.features_hidden,
                                device=device.type)
        _peak_reset(device)
        r = bench_pool.one_round(ns)
    return dict(seconds=r["select_s"], peak_gb=_peak_gb(device), picks=len(r["picks"]),
                detail=f"pool {r['pool']}, d={r['dim']}, L={args.features_labeled}, train "
                       f"{r['train_s']:.1f} s, " + ", ".join(f"{k[:-8]} {v} s"
                                                            for k, v in r["phases"].items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--only", default="greedy,round,bait,features,features_fishermask",
                   help="which parts (comma-separated)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--greedy-pool", type=int, default=6750)
    p.add_argument("--greedy-labeled", type=int, default=500)
    p.add_argument("--greedy-k", type=int, default=22353, help="ResNet-18 at sparsity 0.002")
    p.add_argument("--greedy-d", type=int, default=512)
    p.add_argument("--greedy-n", type=int, default=500)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--round-pool", type=int, default=6750)
    p.add_argument("--round-labeled", type=int, default=500)
    p.add_argument("--round-n", type=int, default=500)
    p.add_argument("--sparsity", type=float, default=0.002)
    p.add_argument("--mask-samples", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--bait-pool", type=int, default=1_000_000)
    p.add_argument("--bait-d", type=int, default=512)
    p.add_argument("--bait-labeled", type=int, default=1000)
    p.add_argument("--bait-n", type=int, default=100)
    p.add_argument("--bait-lam", type=float, default=1.0)
    p.add_argument("--bait-batch", type=int, default=8192)
    p.add_argument("--features-pool", type=int, default=1_000_000)
    p.add_argument("--features-d", type=int, default=128)
    p.add_argument("--features-labeled", type=int, default=1000)
    p.add_argument("--features-n", type=int, default=100)
    p.add_argument("--features-hidden", type=int, default=256, help="FisherMask's MLP")
    p.add_argument("--features-sparsity", type=float, default=0.08, help="FisherMask's mask")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} but no GPU is visible; use DEVICE=cpu with small "
              "sizes", file=sys.stderr)
        return 2
    parts = {"greedy": bench_greedy, "round": bench_round, "bait": bench_bait,
             "features": bench_features,
             "features_fishermask": lambda a, d: bench_features(a, d, "fishermask")}
    chosen = args.only.split(",")
    unknown = [x for x in chosen if x not in parts]
    if unknown:
        print(f"error: unknown part {unknown[0]!r} in --only; choose from {', '.join(parts)}",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    rows = []
    for part in chosen:
        r = parts[part](args, device)
        print(f"{part}: {r['seconds']:.1f} s, peak memory {r['peak_gb']:.2f} GB, {r['picks']} "
              f"picks ({r['detail']})", flush=True)
        rows.append((part, r))
    print("\n| part | seconds | peak memory GB | picks | details |\n|---|---:|---:|---:|---|")
    for part, r in rows:
        print(f"| {part} | {r['seconds']:.3g} | {r['peak_gb']:.2f} | {r['picks']} | {r['detail']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
