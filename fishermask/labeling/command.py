"""``fishermask select``: one real labeling round from files.

    fishermask select my.yaml --labeled labels.csv --n 100 --out next.csv

The config names the folder of images (``data.dataset: image_folder``, ``data.data_dir``; a flat
folder is fine) or a features file (``data.dataset: features``, ``data.features``; the CSV then
names rows: ``row,label``), the network, the training, the strategy and where it runs (``execution``).  The
round trains the network on the labeled images (or loads ``--checkpoint``), runs the strategy over
the others, writes the ``--n`` images to label next, most informative first, and logs the round to
MLflow.  Appending the new labels to the CSV and running the command again is the next round.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from fishermask import preflight
from fishermask.config import Config, load_config
from fishermask.errors import ConfigError
from fishermask.execution import make_executor
from fishermask.labeling.files import (LABEL_STUDIO_PREFIX, feature_labeling_pool,
                                      labeling_pool, write_picks)
from fishermask.loop.loop import jsonable, round_seed
from fishermask.models import load_weights, model_from_params
from fishermask.strategies import SelectionContext, build_strategy
from fishermask.tracking import run_meta
from fishermask.tracking.tracker import get_or_create_experiment, make_client
from fishermask.training import train_model


def add_parser(subparsers, add_common) -> None:
    p = subparsers.add_parser("select", help="one real labeling round: the next images to label, "
                                             "from a folder and the labels given so far")
    p.add_argument("file", help="config: data.data_dir = the image folder, model, train, strategy")
    p.add_argument("--labeled", required=True, metavar="CSV",
                   help="the labels so far: a CSV with the columns path,label (paths relative to "
                        "data.data_dir)")
    p.add_argument("--n", required=True, type=int, help="how many images to pick")
    p.add_argument("--out", required=True, help="where the picks go (CSV, or Label Studio JSON)")
    p.add_argument("--format", choices=["csv", "label-studio"], default="csv",
                   help="csv: path,rank[,score]; label-studio: a JSON list of import tasks")
    p.add_argument("--classes", default=None, metavar="A,B,C",
                   help="the classes, in this order (default: the labels of the CSV, sorted)")
    p.add_argument("--checkpoint", default=None, metavar="STATE_DICT",
                   help="use these weights instead of training on the labeled images")
    p.add_argument("--ls-prefix", default=LABEL_STUDIO_PREFIX,
                   help="label-studio: the image URL is this prefix + the path")
    add_common(p)


def _config(args) -> Config:
    cfg = load_config(args.file, args.overrides)
    if cfg.data.dataset not in ("image_folder", "features"):
        raise ConfigError(f"select reads a folder of images (data.dataset=image_folder, "
                          f"data.data_dir=<the folder>) or a features file (data.dataset=features, "
                          f"data.features=<the .npy>); got data.dataset={cfg.data.dataset}")
    if cfg.data.dataset == "features" and args.format == "label-studio":
        raise ConfigError("--format label-studio lists images to label; a features pool has "
                          "none: use the CSV (its rows) instead")
    if args.tracking_uri:
        cfg.tracking.tracking_uri = args.tracking_uri
    return cfg


def _fit(cfg: Config, model: torch.nn.Module, pool, args,
         device: torch.device) -> torch.nn.Module:
    """The network trained on the labeled images (or with the --checkpoint weights)."""
    data = pool.data
    if args.checkpoint:
        load_weights(model, args.checkpoint)
        return model.to(device).eval()
    gen = torch.Generator().manual_seed(round_seed(cfg.seed, 0, 2))
    torch.manual_seed(round_seed(cfg.seed, 0, 1))
    res = train_model(model, data, pool.labeled, cfg.train, augment=cfg.data.augment,
                      device=device, generator=gen)
    print(f"trained on {len(pool.labeled)} labeled images: {res.epochs} epochs, train accuracy "
          f"{res.train_accuracy:.3f} ({res.seconds:.1f} s)")
    return model


def cmd_select(args) -> int:
    cfg = _config(args)
    n = args.n
    if n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n}")
    uri = preflight.tracking_uri(cfg.tracking.tracking_uri)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    t0 = time.perf_counter()
    if cfg.data.dataset == "features":
        pool = feature_labeling_pool(Path(cfg.data.features), Path(args.labeled), classes)
    else:
        pool = labeling_pool(Path(cfg.data.data_dir), Path(args.labeled), cfg.data.image_size,
                             classes, cfg.data.in_memory, cfg.seed)
    free = len(pool.unlabeled)
    if n > free:
        where = cfg.data.features if cfg.data.dataset == "features" else cfg.data.data_dir
        raise ConfigError(f"--n {n}: only {free} items of {where} are not labeled yet "
                          f"({len(pool.data)} in all, {len(pool.labeled)} labeled)")
    device = preflight.device(cfg.execution)
    strategy = build_strategy(cfg.strategy.name, **cfg.strategy.params)
    torch.manual_seed(round_seed(cfg.seed, 0, 4))  # the initial weights: the same in any process
    model = model_from_params(cfg.model, len(pool.classes), pool.data.in_channels)
    preflight.network(cfg, model, pool.data)
    preflight.mask_capacity(cfg, model, free, len(pool.classes))
    model = _fit(cfg, model, pool, args, device)
    with make_executor(cfg.execution) as ex:
        ex.bind(pool.data)
        ex.set_model(model)
        ctx = SelectionContext(model=ex.model, executor=ex, labeled=pool.labeled,
                               unlabeled=pool.unlabeled, num_classes=len(pool.classes),
                               rng=np.random.default_rng(round_seed(cfg.seed, len(pool.labeled), 3)),
                               classifier=cfg.model.classifier)
        sel = strategy.run_round(ctx, n)
    picked = [pool.name(i) for i in sel.indices]
    out = write_picks(Path(args.out), picked, sel.scores, args.format, args.ls_prefix,
                      "row" if pool.paths is None else "path")
    seconds = time.perf_counter() - t0
    print(f"{cfg.strategy.name}: {n} of {free} unlabeled items in {seconds:.1f} s "
          f"({len(pool.labeled)} labeled, classes {', '.join(pool.classes)}); wrote {out}")
    _log(cfg, uri, args, pool, sel, out, seconds)
    return 0


def _log(cfg: Config, uri: str, args, pool, sel, out: Path, seconds: float) -> None:
    """The round as an MLflow run: the config and the round's sizes as params, the picks and the
    output file as artifacts."""
    from mlflow.entities import Metric

    client = make_client(uri)
    exp_id = get_or_create_experiment(client, cfg.experiment)
    labels = hashlib.sha1(Path(args.labeled).read_bytes()).hexdigest()[:12]
    tags = {**run_meta.versions(), **run_meta.plugin_tags(cfg), "variant": cfg.strategy.name,
            "fishermask.role": "select", "labels_sha1": labels}
    run = client.create_run(exp_id, run_name=f"select {cfg.strategy.name} after "
                                             f"{len(pool.labeled)} labels", tags=tags)
    rid = run.info.run_id
    params = run_meta.run_params(cfg)
    params.update({"select.n": str(len(sel.indices)), "select.labeled": str(len(pool.labeled)),
                   "select.pool": str(len(pool.data)), "select.classes": ",".join(pool.classes),
                   "select.format": args.format})
    run_meta.log_params(client, rid, params)
    client.log_batch(rid, metrics=[Metric("time/select_seconds", seconds, 0, len(pool.labeled))])
    client.log_dict(rid, {"picked": [pool.name(i) for i in sel.indices],
                          "diagnostics": jsonable(sel.diagnostics)}, "picks.json")
    client.log_artifact(rid, str(out))
    client.set_terminated(rid, "FINISHED")
    print(f"MLflow run {rid} in experiment '{cfg.experiment}' at {uri}")


__all__ = ["add_parser", "cmd_select"]
