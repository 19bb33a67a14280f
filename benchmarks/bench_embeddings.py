"""Benchmark the Fisher kernels against the authors' per-(sample, class) autograd loop and
against one training step.

For each model (random init, random 32×32×3 inputs, C classes) it measures, on one batch:

1. ``masked_embeddings`` (one forward + C VJPs + masked per-sample gradients) versus the
   authors' procedure: one ``torch.autograd.grad(log p_c(x_n), all parameters)`` per (n, c),
   each back-propagating the whole batch graph, then masking. The loop is timed on its first
   few (n, c) calls (after one warm-up call) and extrapolated to the B·C calls of the batch.
2. the embedding pass versus one training step (train mode, forward + backward + Adam step).
3. ``fisher_diagonal`` on the batch, and optionally the same diagonal through ``torch.func``
   (``vmap(jacrev(log_softmax ∘ functional_call))`` over samples) for comparison.

Two masks with k = ⌊sparsity·|θ|⌋ and the classifier weight forced: ``fisher`` (the top-k of
the measured Fisher diagonal; at random init it sits in the last layers, so the backward is
short) and ``spread`` (top-k of a random score: entries in every tensor, the backward runs down
to the first conv: the worst case). Prints markdown tables; no assertions.

    python benchmarks/bench_embeddings.py                      # defaults: about 1-2 min
    python benchmarks/bench_embeddings.py --models resnet18 --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import fishermask  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fishermask.kernels.fisher import fisher_diagonal, masked_embeddings, top_k_mask
from fishermask.models import build_model

DEFAULT_BATCH = {"resnet18": 16, "resnet18_narrow": 64, "cnn_small": 128}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18_narrow,resnet18",
                    help="comma-separated model names (fishermask.models)")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size for every model (default: 64 narrow, 16 resnet18)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=32, help="input height = width")
    ap.add_argument("--sparsity", type=float, default=0.002, help="k = floor(sparsity*|theta|)")
    ap.add_argument("--naive-calls", type=int, default=5,
                    help="timed (n, c) calls of the naive loop (after one warm-up call)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (minimum reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--func", choices=["on", "off", "narrow"], default="narrow",
                    help="also time the torch.func Fisher diagonal (narrow: small models only)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (with --threads 1, "
                         "robust to other jobs on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


CLOCK = time.perf_counter


def best_time(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def cpu_info() -> str:
    from fishermask.machine import cpu_model

    return cpu_model()


def train_step_time(model, x, y, repeats: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    t = best_time(step, repeats)
    model.load_state_dict(state)  # leave the weights and BN statistics as they were
    for p in model.parameters():
        p.grad = None
    model.eval()
    return t


def naive_embeddings(model, x, cols: torch.Tensor, calls: int):
    """The authors' loop on its first ``calls`` (n, c) pairs: returns (forward time, mean
    time per (n, c) call, the rows computed)."""
    model.eval()
    params = list(model.parameters())
    t0 = CLOCK()
    logp = torch.log_softmax(model(x), dim=1)
    t_fwd = CLOCK() - t0
    B, C = logp.shape
    pairs = [(n, c) for n in range(B) for c in range(C)][: calls + 1]
    rows, times = [], []
    for i, (n, c) in enumerate(pairs):
        t0 = CLOCK()
        grads = torch.autograd.grad(logp[n, c], params, retain_graph=True, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                          for g, p in zip(grads, params)])
        rows.append((n, c, flat[cols].clone()))
        if i:  # the first call is a warm-up
            times.append(CLOCK() - t0)
    return t_fwd, statistics.mean(times), rows


def func_diagonal(model, x, chunk: int = 4) -> dict:
    """Fisher diagonal through torch.func: vmap over samples of jacrev of log p(x)."""
    from torch.func import functional_call, jacrev, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def logp(pr, xi):
        return torch.log_softmax(functional_call(model, (pr, buffers), (xi[None],)), 1)[0]

    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        with torch.no_grad():
            p = torch.softmax(model(xs), 1)
        for n, j in vmap(jacrev(logp), in_dims=(None, 0))(params, xs).items():
            acc[n] += torch.einsum("bc,bc...->...", p, j * j)
    return {n: a / x.shape[0] for n, a in acc.items()}


def columns(model, mask) -> torch.Tensor:
    cols, off = [], 0
    for n, p in model.named_parameters():
        if n in mask:
            cols.append(mask[n] + off)
        off += p.numel()
    return torch.cat(cols)


def bench_model(name: str, args) -> dict:
    torch.manual_seed(args.seed)
    B = args.batch or DEFAULT_BATCH.get(name, 32)
    model = build_model(name, args.classes, 3).eval()
    x = torch.randn(B, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (B,))
    n_params = sum(p.numel() for p in model.parameters())
    k = int(args.sparsity * n_params)
    W = model.classifier_weight_name
    res = dict(model=name, params=n_params, B=B, k=k, masks={})

    res["train"] = train_step_time(model, x, y, args.repeats)
    t0 = CLOCK()
    diag = fisher_diagonal(model, x)
    res["diag"] = CLOCK() - t0
    if args.func == "on" or (args.func == "narrow" and n_params < 2_000_000):
        t0 = CLOCK()
        ref = func_diagonal(model, x)
        res["func_diag"] = CLOCK() - t0
        res["func_err"] = max(((ref[n] - diag[n]).abs().max() / diag[n].abs().max().clamp_min(
            1e-30)).item() for n in diag)

    g = torch.Generator().manual_seed(args.seed)
    spread = {n: torch.rand(t.shape, generator=g) for n, t in diag.items()}
    masks = {"fisher": top_k_mask(diag, k, force=[W]), "spread": top_k_mask(spread, k, force=[W])}
    naive = None
    for label, mask in masks.items():
        t_emb = best_time(lambda: masked_embeddings(model, x, mask), args.repeats)
        V = masked_embeddings(model, x, mask, prob_scaling=False)
        touched = [n for n, i in mask.items() if i.numel()]
        cols = columns(model, mask)
        t_fwd, t_call, rows = naive_embeddings(model, x, cols, args.naive_calls)
        err = max((V[n, c] - r).abs().max().item() / max(V[n, c].abs().max().item(), 1e-30)
                  for n, c, r in rows)
        naive = t_fwd + B * args.classes * t_call
        res["masks"][label] = dict(emb=t_emb, tensors=len(touched), first=touched[0],
                                   call=t_call, naive=naive, err=err)
    return res


def fmt(t: float) -> str:
    return f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s"


def main(argv=None) -> None:
    global CLOCK
    args = parse_args(argv)
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs ({cpu_info()}), python {platform.python_version()}")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f} (timings are noisy on a busy "
              "machine)")
    print(f"C={args.classes}, inputs 3x{args.size}x{args.size}, k=floor({args.sparsity}*|theta|) "
          f"with the classifier weight forced, random init; minimum of {args.repeats} repeats "
          f"after a warm-up; {args.clock} clock\n")
    results = [bench_model(name.strip(), args) for name in args.models.split(",") if name.strip()]

    print("### 1. masked embeddings vs the authors' per-(sample, class) autograd loop\n")
    print(f"Naive time extrapolated: forward + B*C x (mean of {args.naive_calls} timed "
          "autograd.grad calls after one warm-up); 'rel. diff' compares those rows with ours "
          "(prob_scaling=False, the authors' definition). Each naive call back-propagates the "
          "whole batch while ours costs about one backward per class, so the speed-up grows "
          "about linearly with B (the authors' code used B=500).\n")
    print("| model | params | B | k | mask | tensors in mask | first masked | embeddings | "
          "naive per (n,c) | naive (extrapolated) | speed-up | rel. diff |")
    print("|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        for label, m in r["masks"].items():
            print(f"| {r['model']} | {r['params']:,} | {r['B']} | {r['k']:,} | {label} | "
                  f"{m['tensors']} | {m['first']} | {fmt(m['emb'])} | {fmt(m['call'])} | "
                  f"{fmt(m['naive'])} | {m['naive'] / m['emb']:.0f}x | {m['err']:.1e} |")

    print(f"\n### 2. embedding pass (C={args.classes}) and Fisher diagonal vs one training step\n")
    print("| model | B | train step (fwd+bwd+Adam) | embeddings, fisher mask | ratio | "
          "embeddings, spread mask | ratio | fisher_diagonal | ratio | torch.func diagonal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        f, s, tr = r["masks"]["fisher"], r["masks"]["spread"], r["train"]
        func = (f"{fmt(r['func_diag'])} ({r['func_diag'] / r['diag']:.1f}x slower, rel. diff "
                f"{r['func_err']:.0e})" if "func_diag" in r else "not run")
        print(f"| {r['model']} | {r['B']} | {fmt(tr)} | {fmt(f['emb'])} | {f['emb'] / tr:.1f}x | "
              f"{fmt(s['emb'])} | {s['emb'] / tr:.1f}x | {fmt(r['diag'])} | "
              f"{r['diag'] / tr:.1f}x | {func} |")
    if hasattr(os, "getloadavg"):
        print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
