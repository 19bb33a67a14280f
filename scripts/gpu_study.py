"""A sweep file's grid on one GPU machine in a short lease: several trials at once, within a time
budget, without Ray or MLflow (the paper's Setting 2 at full size with resnet18, say).

    PYTHONPATH=. python3 scripts/gpu_study.py sweeps/paper_fashion_mnist_setting2.yaml \\
        --set data.data_dir=DATA --out OUT --minutes 8 --workers 9
    python scripts/gpu_study.py --report OUT/results.jsonl --out docs/results/gpu_setting2

Trials run seed-major (every variant of seed 0 first) in the sweep file's order, ``--workers`` at a
time in their own processes sharing the GPU.  A trial starts only while its estimated time fits
what is left of ``--minutes`` (the longest finished trial of its variant, else of any; before any
has finished, every trial of the first wave starts).  Each finished round is appended to
``results.jsonl`` at once (one JSON object a line), so a trial the lease cuts short still leaves
its curve; the last line of a finished trial says so.  ``--report`` reads that file here and
writes the usual report (summary.md and figures) of the finished trials, with the hardware.

``--resume`` runs only the trials the ``--out`` folder's results.jsonl has not finished, so a
study too long for one sitting (the CPU studies of docs/results.md) goes on in parts: commit
results.jsonl, run the same command with ``--resume`` later (an interrupted trial continues from its
round checkpoint while the machine keeps it, else from round 0), and ``--report`` the file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _append(path: str, obj: dict) -> None:
    """One JSON line, whole, even with several processes appending to the same file."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(obj) + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def _trial(spec: dict, results: str, workdir: str, threads: int) -> dict:
    """One active-learning run in this process; every round appended to ``results``."""
    import torch

    torch.set_num_threads(threads)
    from fishermask.config import from_dict
    from fishermask.loop import ActiveLearningLoop

    cfg = from_dict(spec["config"])
    head = {"trial": spec["label"], "variant": spec["variant"], "strategy": cfg.strategy.name,
            "seed": cfg.seed}
    t0 = time.time()

    def on_round(loop, rec) -> None:
        _append(results, {**head, "event": "round", "round": rec.round,
                          "n_labels": rec.n_labels, "accuracy": rec.accuracy,
                          "balanced_accuracy": rec.balanced_accuracy,
                          "labels_per_class": list(rec.labels_per_class),
                          "query_seconds": rec.query_seconds, "train_seconds": rec.train_seconds,
                          "epochs": rec.epochs,
                          "phases": {k: v for k, v in rec.metrics.items()
                                     if k.startswith("phase_")},
                          "mask_profile": rec.artifacts.get("mask_profile"),
                          "elapsed": time.time() - t0})

    loop = ActiveLearningLoop.from_config(cfg, progress=False, lock=False, on_round=on_round,
                                          checkpoint_dir=Path(workdir) / spec["key"])
    records = loop.run()
    seconds = time.time() - t0
    _append(results, {**head, "event": "finished", "rounds": len(records), "seconds": seconds,
                      "config": spec["config"]})
    return {"label": spec["label"], "variant": spec["variant"], "seconds": seconds}


def _hardware() -> dict:
    import platform

    import torch

    from fishermask.machine import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"event": "start", "gpu": gpu, "cpu": cpu_model(), "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime())}


def run(args) -> int:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from fishermask.errors import FishermaskError
    from fishermask.sweeps.grid import load_sweep

    try:
        sweep = load_sweep(args.file, args.overrides)
    except FishermaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = [t.to_dict() for t in sweep.trials]
    specs.sort(key=lambda s: s["config"]["seed"])  # stable: seed-major, the file's order within
    out = Path(args.out)
    results = str(out / "results.jsonl")
    workdir = out.parent / f".{out.name}-checkpoints"  # the rounds' checkpoints
    if (out / "results.jsonl").exists() and not args.resume:
        print(f"error: {out / 'results.jsonl'} exists; give another --out (each study starts "
              f"fresh) or --resume to run the trials it has not finished", file=sys.stderr)
        return 2
    if args.resume and (out / "results.jsonl").exists():
        done = set(_finished(results))
        specs = [s for s in specs if s["label"] not in done]
        print(f"resuming: {len(done)} trials finished in {results}, {len(specs)} to run "
              f"(an interrupted one continues from its checkpoint when {workdir} has it)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)  # a fresh study: no old checkpoints
    out.mkdir(parents=True, exist_ok=True)
    _append(results, {**_hardware(), "sweep": str(args.file), "overrides": args.overrides,
                      "trials": len(specs), "minutes": args.minutes, "workers": args.workers})
    budget, t0 = args.minutes * 60.0, time.time()
    took: dict[str, float] = {}  # variant -> longest finished trial, seconds
    waiting, running, skipped = list(specs), {}, []
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        while waiting or running:
            while waiting and len(running) < args.workers:
                spec = waiting.pop(0)
                guess = took.get(spec["variant"], max(took.values(), default=0.0))
                if time.time() - t0 + guess > budget:
                    skipped.append(spec["label"])
                    continue
                fut = pool.submit(_trial, spec, results, str(workdir), args.threads)
                running[fut] = spec
                print(f"[{time.time() - t0:6.0f} s] start  {spec['label']}", flush=True)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # one trial's failure is reported, the rest go on
                    print(f"[{time.time() - t0:6.0f} s] FAILED {spec['label']}: {exc}", flush=True)
                    _append(results, {"event": "failed", "trial": spec["label"], "error": str(exc)})
                    continue
                took[res["variant"]] = max(took.get(res["variant"], 0.0), res["seconds"])
                print(f"[{time.time() - t0:6.0f} s] done   {res['label']} "
                      f"({res['seconds']:.0f} s)", flush=True)
    print(f"{len(specs) - len(skipped)} of {len(specs)} trials run in {time.time() - t0:.0f} s; "
          f"not started (budget): {', '.join(skipped) or 'none'}")
    print(f"wrote {results}")
    return 0


def _rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _finished(path: str | Path) -> list[str]:
    return [r["trial"] for r in _rows(path) if r["event"] == "finished"]


def load_results(*paths: str | Path):
    """The finished trials of one or more ``results.jsonl`` (a study run in parts: its later
    files win) as report runs, and the first file's header (hardware), with ``parts``: the
    hardware of every sitting that started trials (its ``start`` lines).  A round logged twice (a
    trial restarted after an interruption) counts once, its last line."""
    import numpy as np

    from fishermask.config import flatten
    from fishermask.reports.data import RunData, run_config

    rows = [r for path in paths for r in _rows(path)]
    starts = [r for r in rows if r["event"] == "start"]
    header = dict(starts[0], parts=starts) if starts else {}
    finished = {r["trial"]: r for r in rows if r["event"] == "finished"}
    runs = []
    for label, fin in finished.items():
        last = {r["round"]: r for r in rows if r["event"] == "round" and r["trial"] == label}
        rounds = [last[k] for k in sorted(last)]
        seconds = {"run (wall)": fin["seconds"],
                   "train": sum(r["train_seconds"] for r in rounds),
                   "query": sum(r["query_seconds"] for r in rounds)}
        for r in rounds:
            for k, v in r["phases"].items():
                name = "query: " + k[len("phase_"):].removesuffix("_seconds")
                seconds[name] = seconds.get(name, 0.0) + v
        flat = run_config({k: str(v) for k, v in flatten(fin["config"]).items()})  # as params
        runs.append(RunData(
            run_id=label, variant=fin["variant"], strategy=fin["strategy"], seed=fin["seed"],
            status="FINISHED", context={k: v for k, v in flat.items()
                                        if not k.startswith("strategy.")},
            steps=np.array([r["n_labels"] for r in rounds]),
            curves={m: np.array([r[m] for r in rounds], dtype=float)
                    for m in ("accuracy", "balanced_accuracy")},
            labels_per_class=rounds[-1]["labels_per_class"],
            mask_profiles=[r["mask_profile"] for r in rounds if r.get("mask_profile")],
            seconds=seconds, config=flat, epochs=[r["epochs"] for r in rounds]))
    return runs, header


def _where(hw: dict, sitting: bool = True) -> str:
    """The hardware of a ``start`` line in words (with the sitting's trials at a time and date)."""
    cpu = f"CPU ({hw['cpu']})" if hw.get("cpu") else "CPU"
    text = (f"{hw.get('gpu') or cpu}, torch {hw.get('torch')}, "
            f"{hw.get('cpus')} CPUs")
    return text + (f", {hw.get('workers')} trials at a time, {hw.get('time')}" if sitting else "")


def report(args) -> int:
    from fishermask.reports.command import build_report

    runs, hw = load_results(*args.report)
    if not runs:
        print(f"error: no finished trial in {' '.join(args.report)}", file=sys.stderr)
        return 2
    where = _where(hw)
    machines = sorted({_where(part, sitting=False) for part in hw.get("parts", [])})
    notes = [f"ran on {where}"] + ([f"its sittings ran on {len(machines)} kinds of machine: "
                                    + "; ".join(machines)] if len(machines) > 1 else [])
    res = build_report(runs, Path(args.out), title=f"{hw.get('sweep', 'GPU study')} ({where})",
                       notes=notes)
    for path in res["files"].values():
        print(f"wrote {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="sweep file (its sweep: grid is run)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True, help="folder for results.jsonl (or the report)")
    ap.add_argument("--minutes", type=float, default=8.0, help="start no trial past this")
    ap.add_argument("--workers", type=int, default=4, help="trials at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per trial")
    ap.add_argument("--report", metavar="RESULTS_JSONL", nargs="+",
                    help="write the report of one or more results files (a study run in parts)")
    ap.add_argument("--resume", action="store_true",
                    help="run only the trials --out's results.jsonl has not finished yet")
    args = ap.parse_args()
    if args.report:
        return report(args)
    if not args.file:
        ap.error("give a sweep file, or --report RESULTS_JSONL")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
