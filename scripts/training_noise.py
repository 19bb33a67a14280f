"""How much of a learning curve's round-to-round noise is training noise?

Takes one finished run of a sweep from MLflow (its logged config.yaml and selected_indices.json),
rebuilds the labeled set it had after a given round and retrains the model on exactly that set
several times with different training seeds. For each retraining it prints the epochs, the final
training accuracy and the test accuracy two ways: the model as trained (BatchNorm running
statistics from training, what the loop reports) and after recomputing the BatchNorm statistics
over the labeled set (cumulative average, no gradient step).

    python scripts/training_noise.py --experiment fashion_mnist_cpu_setting1_low \\
        --strategy kcenter --seed 0 --round 6 --repeats 5 --data-dir DIR

The spread over repeats at a fixed labeled set is noise that no selection strategy can remove.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import torch
import yaml


def main() -> None:
    from mlflow.tracking import MlflowClient

    from fishermask.config import apply_overrides, from_dict
    from fishermask.data import load_experiment_data
    from fishermask.models import model_from_params
    from fishermask.sweeps.grid import absolute_tracking_uri
    from fishermask.training import evaluate, recalibrate_batchnorm, train_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--variant", default=None,
                    help="the sweep's variant label when a strategy has several (e.g. "
                         "'fishermask prob_scaling=False'); default: the strategy's name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round", type=int, required=True, help="the labeled set after this round")
    ap.add_argument("--repeats", type=int, default=5, help="retrainings (training seeds 0..)")
    ap.add_argument("--data-dir", default=None, help="override data.data_dir of the run")
    ap.add_argument("--recal-batch", type=int, default=None,
                    help="batch size of the BatchNorm recalibration (default: the run's "
                         "train.eval_batch_size, as the loop does it)")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    client = MlflowClient(absolute_tracking_uri(args.tracking_uri))
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"error: experiment {args.experiment!r} not found")
    runs = client.search_runs([exp.experiment_id],
                              f"params.`strategy.name` = '{args.strategy}' and "
                              f"params.seed = '{args.seed}' and attributes.status = 'FINISHED' "
                              f"and tags.variant = '{args.variant or args.strategy}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"error: no finished {args.variant or args.strategy} run with seed "
                         f"{args.seed}")
    run_id = runs[0].info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        raw = yaml.safe_load(open(client.download_artifacts(run_id, "config.yaml", tmp)))
        picks = json.load(open(client.download_artifacts(run_id, "selected_indices.json", tmp)))
    if args.data_dir:
        raw = apply_overrides(raw, [f"data.data_dir={args.data_dir}"])
    cfg = from_dict(raw)
    data = load_experiment_data(cfg.data, cfg.seed)
    labeled = np.array(picks["initial"] + sum(picks["rounds"][:args.round], []), dtype=np.int64)
    counts = np.bincount(data.pool.targets[torch.as_tensor(labeled)].numpy(),
                         minlength=data.pool.num_classes)
    print(f"run {run_id} ({args.strategy}, seed {args.seed}), labeled set after round "
          f"{args.round}: {len(labeled)} labels, per class {counts.tolist()}")
    print("| training seed | epochs | train acc. | test acc. (as trained) | "
          "test acc. (BatchNorm recalibrated) |\n|---|---|---|---|---|")
    plain, recal = [], []
    for rep in range(args.repeats):
        torch.manual_seed(rep)
        model = model_from_params(cfg.model, data.pool.num_classes, data.pool.in_channels)
        gen = torch.Generator().manual_seed(rep)
        # trained without the recalibration (whatever the run did), tested, then recalibrated
        # as the loop does it (train.bn_recalibrate, batches of train.eval_batch_size)
        as_trained = cfg.train.model_copy(update={"bn_recalibrate": False})
        tr = train_model(model, data.pool, labeled, as_trained, augment=cfg.data.augment,
                         device=torch.device("cpu"), generator=gen)
        plain.append(evaluate(model, data.test, device=torch.device("cpu"))["accuracy"])
        recalibrate_batchnorm(model, data.pool, labeled,
                              batch_size=args.recal_batch or cfg.train.eval_batch_size)
        recal.append(evaluate(model, data.test, device=torch.device("cpu"))["accuracy"])
        print(f"| {rep} | {tr.epochs} | {tr.train_accuracy:.3f} | {plain[-1]:.4f} | "
              f"{recal[-1]:.4f} |")
    for name, xs in (("as trained", plain), ("BatchNorm recalibrated", recal)):
        print(f"{name}: mean {np.mean(xs):.4f}, std {np.std(xs, ddof=1) if len(xs) > 1 else 0:.4f}"
              f", range {min(xs):.4f}-{max(xs):.4f}")


if __name__ == "__main__":
    main()
