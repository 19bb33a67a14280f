"""Compare two sweeps that ran the same strategies and seeds under two evaluations.

    python scripts/compare_evaluations.py \\
        --sweep "BatchNorm recalibrated=fashion_mnist_resnet_setting1_low" \\
        --sweep "as trained=fashion_mnist_resnet_setting1_low_bn_off" \\
        --out docs/results/resnet_evaluation

Each ``--sweep`` is ``NAME=EXPERIMENT`` (the newest sweep of that MLflow experiment); only the
strategies both have are compared.  Writes ``summary.md`` (also printed) and ``curves.png``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from fishermask.errors import FishermaskError

    try:
        _compare(_args())
    except (FishermaskError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", action="append", required=True, metavar="NAME=EXPERIMENT")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metric", default="accuracy", choices=["accuracy", "balanced_accuracy"])
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args()
    if len(args.sweep) < 2 or any("=" not in s for s in args.sweep):
        raise SystemExit("error: give two or more --sweep NAME=EXPERIMENT")
    names = [s.split("=", 1)[0] for s in args.sweep]
    if len(set(names)) < len(names):
        raise SystemExit(f"error: each --sweep needs its own NAME; got {', '.join(names)}")
    return args


def _compare(args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    from fishermask import preflight
    from fishermask.reports.command import _check_store
    from fishermask.reports.compare import compare, curves_figure
    from fishermask.reports.data import child_runs, find_parent, load_run, split_configs
    from fishermask.sweeps.grid import absolute_tracking_uri

    uri = absolute_tracking_uri(preflight.tracking_uri(args.tracking_uri))  # fails fast if down
    _check_store(args, uri)  # reads a store, never creates one
    client = MlflowClient(uri)
    evaluations = {}
    for spec in args.sweep:
        name, experiment = spec.split("=", 1)
        parent, exp_id = find_parent(client, experiment=experiment)
        finished = [r for r in child_runs(client, exp_id, parent) if r.info.status == "FINISHED"]
        runs, _ = split_configs([load_run(client, r) for r in finished])
        evaluations[name] = runs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = [f"`{s.split('=', 1)[1]}` ({s.split('=', 1)[0]})" for s in args.sweep]
    count = {2: "Two", 3: "Three", 4: "Four"}.get(len(specs), str(len(specs)))
    names = ", ".join(specs[:-1]) + " and " + specs[-1]
    lines = [f"# {count} evaluations: {names}", "", "![curves](curves.png)", "",
             *compare(evaluations, args.metric)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    curves_figure(evaluations, out / "curves.png", args.metric)
    print("\n".join(lines))
    print(f"wrote {out / 'summary.md'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
