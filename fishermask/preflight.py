"""Checks that run before any work: things that would otherwise fail (or hang) only after
minutes of training.  Each raises a :class:`~fishermask.errors.FishermaskError` (exit code 2)
whose message names what is wrong and how to fix it.

* :func:`tracking_uri` — a malformed or unreachable MLflow tracking URI, a store folder that
  cannot be written;
* :func:`writable_folder` — a read-only working folder, a path component that is a file;
* :func:`local_shards` — more ``execution.shards`` than a local Ray on this machine can run;
* :func:`budget` — more labels than the pool holds;
* :func:`device` — ``execution.device: cuda`` without a GPU;
* :func:`mask_capacity` — a FisherMask mask too small for the classifier it must hold (or
  empty, or larger than memory allows).
"""

from __future__ import annotations

import math
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from fishermask.data.params import SETTINGS
from fishermask.config import CONFIG_KEYS
from fishermask.errors import ConfigError, FishermaskError, MemoryLimitError, ParameterError
from fishermask.execution.base import resolve_device
from fishermask.execution.ray.cluster import local_cpus, local_shards  # noqa: F401 (re-exported)
from fishermask.kernels._driver import check_memory, greedy_memory_gb
from fishermask.kernels.embeddings import row_bytes
from fishermask.kernels.head import check_head_output, find_head
from fishermask.models import build_model, freeze_features
from fishermask.strategies.fisher_greedy import mask_size

REACH_TIMEOUT_S = 10.0
"""How long an http(s) tracking server may take to answer the reachability probe."""
PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"
_DB_SCHEMES = ("postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


# ----------------------------------------------------------------------------- folders

def writable_folder(path: str | Path, what: str, fix: str = "") -> Path:
    """``path`` (a folder to be created if missing) made absolute and ``~``-expanded; raise if
    it cannot be created or written: a component is a file, or the folder is read-only."""
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    how = f" {fix}" if fix else ""
    if probe.exists() and not probe.is_dir():
        raise FishermaskError(f"{what}: {probe} exists but is a file, not a folder, so {path} "
                              f"cannot be created; rename or remove that file{how}")
    if not os.access(probe, os.W_OK | os.X_OK):
        inside = "" if probe == path else f" (so {path} cannot be created)"
        raise FishermaskError(f"{what}: the folder {probe} is read-only{inside}; run from a "
                              f"writable folder{how}")
    return path


# ----------------------------------------------------------------------------- tracking URI

def tracking_uri(uri: Optional[str]) -> str:
    """Validate (and return, ``~`` expanded) a tracking URI before anything is logged: a
    sqlite/file store must be writable, an http(s) server must answer within ~10 s."""
    import mlflow

    given = uri
    uri = uri or mlflow.get_tracking_uri()
    flag = "--tracking-uri" if given else "the tracking URI (MLFLOW_TRACKING_URI or the default)"
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        m = re.match(r"^sqlite:///(.*)$", uri)
        if not m or not m.group(1):
            raise ConfigError(f"{flag} {uri!r} is not a valid sqlite URI; write "
                              f"sqlite:///relative/path.db or sqlite:////absolute/path.db")
        rest = m.group(1)
        if rest.startswith("~"):
            rest = os.path.expanduser(rest)
            uri = "sqlite:///" + rest
        if rest != ":memory:":
            writable_folder(Path(rest).parent, f"MLflow store {uri}",
                            "or pass --tracking-uri sqlite:////a/writable/folder/mlflow.db")
        return uri
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise ConfigError(f"{flag} {uri!r} has no host; write e.g. http://127.0.0.1:5000")
        try:
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(f"{flag} {uri!r} has a malformed port; write e.g. "
                              f"http://127.0.0.1:5000") from None
        _reach(uri, flag)
        return uri
    if scheme == "file" or (scheme == "" and uri):
        path = parsed.path if scheme == "file" else uri
        path = os.path.expanduser(path)
        writable_folder(path, f"MLflow file store {uri}", "or pass a writable --tracking-uri")
        return Path(path).absolute().as_uri() if scheme == "file" else path
    if scheme in _DB_SCHEMES or (scheme and "+" in scheme):
        return uri  # database stores: MLflow reports their own connection errors
    if len(scheme) == 1 and re.match(r"^[A-Za-z]:", uri):  # a Windows drive letter
        return uri
    raise ConfigError(f"{flag} {uri!r}: unknown scheme '{scheme}'; use http(s)://host:port for a "
                      f"tracking server, sqlite:///path.db for a local store, or a folder path")


def _reach(uri: str, flag: str) -> None:
    """One call of MLflow's REST API: it must answer (401/403: the client's credentials, which
    this probe does not send, are MLflow's business) within ``REACH_TIMEOUT_S``."""
    url = uri.rstrip("/") + PROBE
    try:
        with urllib.request.urlopen(url, timeout=REACH_TIMEOUT_S):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return
        raise FishermaskError(
            f"{uri} answers, but not as an MLflow tracking server (HTTP {exc.code} for {PROBE}); "
            f"check {flag}: host, port and path prefix of the server") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FishermaskError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}). Start it (e.g. "
            f"mlflow server --host 127.0.0.1 --port {urlparse(uri).port or 5000}), fix "
            f"{flag}, or drop --tracking-uri to log to a local sqlite:///mlflow.db") from None


# ----------------------------------------------------------------------------- resources

def local_trial(execution, label: str) -> None:
    """A sweep trial on a new local Ray: its placement group (one CPU for the trial plus one
    bundle per shard, or one bundle) must fit this machine, or it stays PENDING for ever."""
    cpus = local_cpus()
    need = (1 + execution.shards * execution.cpus_per_shard if execution.use_ray
            else max(1.0, execution.cpus_per_shard))
    if need > cpus + 1e-9:
        most = max(0, int((cpus - 1) // execution.cpus_per_shard))
        fix = (f"use at most execution.shards={most} here" if execution.use_ray and most >= 1
               else "lower execution.shards / execution.cpus_per_shard")
        raise ConfigError(
            f"trial '{label}' needs {need:g} CPUs (1 for the trial + execution.shards="
            f"{execution.shards} × {execution.cpus_per_shard:g}), but this machine has {cpus}; "
            f"{fix}, or join a cluster with --address")


def device(execution):
    """The torch device ``execution.device`` names; a ConfigError when it is cuda without a GPU."""
    try:
        return resolve_device(execution.device)
    except ParameterError:
        raise ConfigError("execution.device is 'cuda' but no GPU is visible; use --set "
                          "execution.device=auto (or cpu)") from None


def budget(cfg, pool_size: int) -> None:
    """The budget's labels must fit in the pool."""
    initial, query, rounds = cfg.budget.resolved()
    total = initial + rounds * query
    if total > pool_size:
        raise ConfigError(
            f"budget: {initial} initial + {rounds} rounds × {query} = {total} labels, but the "
            f"pool has only {pool_size} images; lower budget.rounds/budget.query/budget.initial "
            f"or enlarge the pool (data.class_counts)")


# ----------------------------------------------------------------------------- the network

def network(cfg, model, pool) -> None:
    """The network's final nn.Linear (``model.classifier``, else classifier/fc/head) must exist
    and the model's output must be its logits, one per class of the pool: checked on one pool
    image before any training."""

    try:
        path, head = find_head(model, cfg.model.classifier)
        was = model.training
        model.eval()
        try:
            check_head_output(model, pool.inputs([0]), head, path)
        finally:
            model.train(was)
    except TypeError as exc:
        raise ConfigError(f"model.name={cfg.model.name}: {exc}") from None
    except RuntimeError as exc:  # e.g. the input does not fit the network
        raise ConfigError(f"model.name={cfg.model.name}: a forward pass on one pool image "
                          f"({tuple(pool.inputs([0]).shape)}) fails: {str(exc).splitlines()[0]}"
                          ) from None
    if head.out_features != pool.num_classes:
        raise ConfigError(f"model.name={cfg.model.name}: the final nn.Linear {path!r} has "
                          f"{head.out_features} outputs but the pool has {pool.num_classes} "
                          f"classes; the network factory must use num_classes")


# ----------------------------------------------------------------------------- FisherMask

def mask_capacity(cfg, model, pool_size: int, num_classes: int) -> None:
    """FisherMask's k = ⌊sparsity·|θ|⌋ checked against the model before any training: the
    classifier weights forced into the mask must fit, the mask must not be empty, and (on one
    process) the greedy's arrays must fit ``execution.max_memory_gb``."""
    if cfg.strategy.name not in ("fishermask", "fishermask_authors"):
        return
    p = cfg.strategy.params
    n_params = sum(t.numel() for t in model.parameters() if t.requires_grad)
    sparsity = p["sparsity"]
    k = mask_size(sparsity, n_params)
    head = find_head(model, cfg.model.classifier)[1]
    forced = head.weight.numel() if p.get("include_last_layer", True) else 0
    need = max(forced, 1)
    if k < need:
        smallest = _smallest_sparsity(need, n_params)
        what = (f"the {forced} classifier weights that strategy.include_last_layer=true puts in "
                f"the mask" if forced else "one weight")
        alt = " or strategy.include_last_layer=false," if forced else ""
        raise ConfigError(
            f"strategy.sparsity={sparsity:g} gives a mask of k={k} weights on model "
            f"{cfg.model.name} ({n_params} parameters for {num_classes} classes), fewer than "
            f"{what}. The smallest valid sparsity is {smallest:g}: use --set "
            f"strategy.sparsity={smallest:g} (or larger),{alt} or a larger model "
            f"(model.name=resnet18_narrow)")
    if cfg.execution.use_ray:
        return  # the shards split the greedy's arrays; the executor checks each one
    initial = cfg.budget.resolved()[0]
    # candidates' stored rows: the classifier block factored as (h, p), the rest of the mask dense
    d = head.weight.shape[1]
    top_c = p.get("top_c") if p.get("fisher_classes") == "top" else None
    per_row = row_bytes(num_classes, d, k - forced, bool(forced), p.get("storage_dtype", "float32"),
                        top_c)
    gb = greedy_memory_gb(max(pool_size - initial, 0), per_row, top_c or num_classes, k,
                          p.get("fisher_target", "dense"))
    try:
        check_memory(gb, cfg.execution.max_memory_gb,
                     what=f"the FisherMask greedy (strategy.sparsity={sparsity:g}: k={k} "
                          f"weights, pool {pool_size} × {num_classes} classes)")
    except MemoryLimitError as exc:
        raise exc.renamed(CONFIG_KEYS) from None


def _smallest_sparsity(need: int, n_params: int) -> float:
    """The smallest sparsity with ⌊s·n⌋ ≥ need, rounded up to 3 significant digits."""
    s = need / n_params
    digits = 3 - int(math.floor(math.log10(s)))
    factor = 10 ** digits
    s = math.ceil(s * factor) / factor
    while math.floor(s * n_params) < need:  # pragma: no cover - rounding guard
        s += 1 / factor
    return min(s, 1.0)


_BUILTIN = {"digits": (1, 10, 1258), "fashion_mnist": (1, 10, 60000), "cifar10": (3, 10, 50000)}
"""dataset: (channels, classes, train images) — enough to check a trial without its data."""


def trial_mask_capacity(cfg) -> None:
    """:func:`mask_capacity` for a config whose data is not loaded yet (sweep trials, checked in
    the driver before any trial starts); image folders are checked when the trial loads them."""
    if cfg.strategy.name not in ("fishermask", "fishermask_authors"):
        return
    if cfg.data.dataset not in _BUILTIN:
        return
    channels, classes, size = _BUILTIN[cfg.data.dataset]
    counts = (SETTINGS[cfg.data.setting] if cfg.data.setting is not None
              else cfg.data.class_counts)
    if counts is not None:
        classes, size = sum(1 for c in counts if c > 0), sum(counts)
    model = build_model(cfg.model.name, classes, channels, cfg.model.args)
    if cfg.model.freeze == "features":
        freeze_features(model, find_head(model, cfg.model.classifier)[1])
    mask_capacity(cfg, model, size, classes)
