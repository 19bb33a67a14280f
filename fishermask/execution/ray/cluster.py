"""Joining an existing Ray cluster, and checking what a job asks for against what it offers.

* :func:`connect` joins ``address`` after a quick probe of the cluster's GCS, so that the usual
  mistakes end in one message instead of Ray's minute of retries and a traceback: nothing listens
  there, or the cluster uses token authentication (``ray start`` turns it on when a token exists)
  and this process has ``RAY_AUTH_MODE`` unset, no token, or another token than the cluster's.
* :func:`check_bundles` compares resource bundles (a trial's placement group, or a run's shard
  actors) with the cluster's nodes, so that a request the cluster can never grant fails at once
  (naming what is missing) instead of staying PENDING.  A cluster that autoscales is checked
  against the most its autoscaler may add; a launcher's cluster whose limits are unknown is not
  checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fishermask.errors import ConfigError, FishermaskError
from fishermask.plugins import local_modules

PROBE_TIMEOUT_S = 5.0
AUTH_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"
TOKEN_HOWTO = ("export RAY_AUTH_MODE=token, and give this process the cluster's token: on the "
               "head node `ray get-auth-token` prints it; put it in ~/.ray/auth_token here, or "
               "export RAY_AUTH_TOKEN=<token> (or RAY_AUTH_TOKEN_PATH=<file>)")


class ClusterError(FishermaskError):
    """The Ray cluster cannot be joined, or cannot give what the job asks for."""


# ----------------------------------------------------------------------------- connecting

def _token() -> tuple[Optional[str], str]:
    """The token this process would send, and where it comes from (Ray's order of precedence)."""
    env = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if env:
        return env, "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            return Path(path).expanduser().read_text().strip() or None, f"RAY_AUTH_TOKEN_PATH={path}"
        except OSError:
            return None, f"RAY_AUTH_TOKEN_PATH={path} (unreadable)"
    default = Path.home() / ".ray" / "auth_token"
    try:
        return default.read_text().strip() or None, str(default)
    except OSError:
        return None, f"{default} (missing)"


def _client_uses_token(address: Optional[str]) -> bool:
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.strip().lower() == "token"
    # Ray turns token mode on by itself only for a cluster it finds on this machine (auto)
    return address in (None, "auto") and _token()[0] is not None


def _resolve(address: str) -> Optional[str]:
    """host:port of the GCS for a ray.init address; None for addresses not probed (ray://)."""
    if address.startswith(("ray://", "http://", "https://")):
        return None
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except Exception:  # no cluster recorded on this machine
            found = None
        if found is None:
            raise ClusterError("address 'auto': no Ray cluster is running on this machine; start "
                               "one (`ray start --head`) or give the head's host:port")
        return found
    return address


class _Quiet:
    """Silence file descriptor 2 (Ray's C++ client logs its retries there) for a moment."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def _probe(target: str) -> Optional[BaseException]:
    """Open a GCS client to ``target`` (host:port) as ray.init would; the error it raised."""
    import ray._raylet

    try:
        with _Quiet():
            ray._raylet.GcsClient(address=target)
    except Exception as exc:  # AuthenticationError, RpcError (not a GCS), ...
        return exc
    return None


def _speaks_http2(sock) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 preface with a SETTINGS frame, as every
    gRPC server (Ray's GCS) does; an HTTP/1 server answers otherwise or not at all."""
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError:  # no answer in time, or the connection was reset
        return False
    return len(head) == 9 and head[3] == 4


def check_reachable(address: str) -> None:
    """Raise a :class:`ClusterError` saying what to do when joining ``address`` would fail for a
    reason found in a few seconds: nothing answers there, or this process lacks the cluster's
    token.  Other problems are left to ``ray.init``."""
    import socket

    from ray.exceptions import AuthenticationError

    target = _resolve(address)
    if target is None:
        return
    where = f"the Ray cluster at {address}" + (f" ({target})" if target != address else "")
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S) as s:
            grpc_server = _speaks_http2(s)
    except ValueError:
        raise ClusterError(f"address {address!r} is not host:port (e.g. 10.0.0.5:6379), 'auto' "
                           f"or ray://host:port") from None
    except OSError as exc:
        raise ClusterError(
            f"cannot reach {where}: {exc.strerror or type(exc).__name__}. Check the address "
            f"(the head's `ray start --head` prints it; `ray status` on the head checks the "
            f"cluster) and that the cluster is up") from None
    if not grpc_server:  # e.g. the dashboard's port: Ray's client would retry for ~40 s
        raise ClusterError(
            f"{where} answers, but not as a Ray cluster's GCS (gRPC). Give the address that "
            f"`ray start --head` printed (port 6379 by default), not the dashboard's (8265, for "
            f"`ray job submit`) or another service's")
    uses_token = _client_uses_token(address)
    token, source = _token()
    if uses_token and token is None:  # Ray's client would abort the process here
        raise ClusterError(f"RAY_AUTH_MODE=token, but this process has no token for {where} "
                           f"(none in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or {source}). To "
                           f"join it: {TOKEN_HOWTO}")
    exc = _probe(target)
    if not isinstance(exc, AuthenticationError):
        return
    if not uses_token:
        raise ClusterError(
            f"{where} uses token authentication (Ray turns it on when the head starts with a "
            f"token), but this process connects without it ("
            + (f"RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}" if os.environ.get("RAY_AUTH_MODE")
               else "RAY_AUTH_MODE is not set") + f"). To join it: {TOKEN_HOWTO}. "
            f"See {AUTH_DOCS}")
    raise ClusterError(f"{where} rejected this process's token (from {source}): it is not the "
                       f"cluster's token; {TOKEN_HOWTO[TOKEN_HOWTO.index('on the head'):]}")


def ray_init(**kwargs: Any) -> None:
    """``ray.init`` that leaves this process's SIGTERM handler as it was: Ray installs one that
    exits at once (code 134 after a native dump), and a run or sweep stopped by SIGTERM must
    still end KILLED with its checkpoints and a resume hint.  Plug-in modules that are not
    installed (a module next to the sweep file) travel to every worker as ``py_modules``."""
    import signal
    import threading

    import ray

    modules = local_modules()
    if modules:
        env = dict(kwargs.get("runtime_env") or {})
        env["py_modules"] = list(env.get("py_modules", [])) + modules
        kwargs["runtime_env"] = env

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(**kwargs)
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def connect(address: str, **init_kwargs: Any) -> None:
    """``ray.init(address=address)`` after :func:`check_reachable`; Ray's connection and
    authentication errors become a :class:`ClusterError`."""
    import ray
    from ray.exceptions import AuthenticationError

    check_reachable(address)
    try:
        ray_init(address=address, **init_kwargs)
    except (ConnectionError, AuthenticationError) as exc:
        if ray.is_initialized():
            ray.shutdown()
        hint = (f"; if the cluster uses token authentication: {TOKEN_HOWTO}"
                if "auth" in str(exc).lower() or isinstance(exc, AuthenticationError) else "")
        raise ClusterError(f"could not join the Ray cluster at {address}: "
                           f"{str(exc).splitlines()[0]}{hint}") from None


# ----------------------------------------------------------------------------- resources

@dataclass
class Capacity:
    """What the cluster joined by this process can offer."""

    nodes: list[dict[str, float]]            # resources of each alive node
    total: dict[str, float]                  # their sum
    autoscaling_max: Optional[dict[str, float]] = None   # the autoscaler's maximum, when known
    node_types: list[dict[str, float]] = field(default_factory=list)  # nodes it may add
    unknown_limits: bool = False             # a launcher's cluster of unknown maximum size


def capacity() -> Capacity:
    import ray

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    total: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            total[k] = total.get(k, 0.0) + v
    cap = Capacity(nodes, total)
    try:
        from ray._private import state

        config = state.state.get_cluster_config()
        if config is not None and config.node_group_configs:
            cap.node_types = [dict(g.resources) for g in config.node_group_configs
                              if g.max_count != 0]
            cap.autoscaling_max = {k: float(v) for k, v in
                                   (state.state.get_max_resources_from_cluster_config()
                                    or {}).items()}
            return cap
    except Exception:  # an older/newer Ray without these internals: use the nodes alone
        pass
    # the cluster launcher's autoscaler (Tune's own test for it) may add nodes of unknown size
    cap.unknown_limits = Path("~/ray_bootstrap_config.yaml").expanduser().exists()
    return cap


def _fmt(res: dict[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU") if res.get(k)] + sorted(
        k for k in res if k not in ("CPU", "GPU", "memory", "object_store_memory")
        and not k.startswith("node:") and res[k])
    return ", ".join(f"{res[k]:g} {k}" for k in keys) or "nothing"


def shortfall(bundles: list[dict[str, float]], cap: Capacity) -> Optional[str]:
    """What the cluster lacks to place ``bundles`` (one placement group), or None if it could."""
    need: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    limit = dict(cap.total)
    if cap.autoscaling_max is not None:
        limit = {k: max(limit.get(k, 0.0), cap.autoscaling_max.get(k, 0.0))
                 for k in set(limit) | set(cap.autoscaling_max)}
    missing = {k: v - limit.get(k, 0.0) for k, v in need.items() if v > limit.get(k, 0.0) + 1e-9}
    if missing:
        return (f"needs {_fmt(need)} in all, but the cluster "
                + ("can grow to" if cap.autoscaling_max is not None else "has")
                + f" {', '.join(f'{limit.get(k, 0.0):g} {k}' for k in sorted(need) if need[k])}"
                + f": {_fmt(missing)} missing")
    places = cap.nodes + cap.node_types
    for b in bundles:
        if b and not any(all(p.get(k, 0.0) + 1e-9 >= v for k, v in b.items()) for p in places):
            biggest = ", ".join(f"[{_fmt(p)}]" for p in places) or "none"
            return (f"needs a node with {_fmt(b)} for one of its parts, but no node has that "
                    f"much (nodes: {biggest})")
    return None


def check_bundles(requests: dict[str, list[dict[str, float]]], *, fix: str,
                  cap: Optional[Capacity] = None) -> None:
    """Raise a :class:`ClusterError` when the cluster can never place one of ``requests``
    ({what: bundles}); ``fix`` says how to ask for less.  Skipped (None) on a launcher's
    autoscaling cluster whose maximum is unknown."""
    cap = cap or capacity()
    if cap.unknown_limits:
        return
    for what, bundles in requests.items():
        lack = shortfall(bundles, cap)
        if lack:
            raise ClusterError(f"{what} {lack}; it would wait forever. {fix}")


# ----------------------------------------------------------------------------- a local Ray

def local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_shards(execution) -> None:
    """``execution.shards`` that a new local Ray (no cluster address) cannot run at once."""
    if not execution.use_ray or execution.address:
        return
    import ray

    if ray.is_initialized():  # a Ray started by the caller (not a Tune trial's bundles)
        from ray.util import get_current_placement_group

        if get_current_placement_group() is not None:
            return
        cpus, where = int(ray.cluster_resources().get("CPU", 0)), "the running Ray has"
    elif os.environ.get("RAY_ADDRESS"):
        return  # a cluster: the executor checks its resources once joined
    else:
        cpus, where = local_cpus(), "this machine has"
    need = execution.shards * execution.cpus_per_shard
    if need > cpus + 1e-9:
        most = max(1, int(cpus // execution.cpus_per_shard))
        raise ConfigError(
            f"execution.shards={execution.shards} × execution.cpus_per_shard="
            f"{execution.cpus_per_shard:g} needs {need:g} CPUs, but {where} {cpus}; use "
            f"at most execution.shards={most} here, or join a cluster (execution.address)")
    if execution.gpus_per_shard > 0:
        import torch

        gpus = torch.cuda.device_count()
        need_g = execution.shards * execution.gpus_per_shard
        if need_g > gpus + 1e-9:
            raise ConfigError(
                f"execution.shards={execution.shards} × execution.gpus_per_shard="
                f"{execution.gpus_per_shard:g} needs {need_g:g} GPUs, but this machine has "
                f"{gpus}; lower execution.shards or execution.gpus_per_shard")


__all__ = ["ClusterError", "Capacity", "capacity", "check_bundles", "check_reachable", "connect",
           "shortfall"]
