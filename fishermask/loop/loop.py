"""The active-learning loop: rounds until the budget, a checkpoint after every round.

It talks to an executor (where the pool's per-sample work runs) and a tracker (where results
go); it knows nothing of Ray Tune.  All randomness of round r derives from (seed, r), and the
checkpoint holds the labeled indices, the model, the RNG states and the records so far, so an
interrupted run resumes at the next round and ends with exactly the uninterrupted curves.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from fishermask import preflight
from fishermask.config import CONFIG_KEYS, Config
from fishermask.data import initial_labeled, load_experiment_data
from fishermask.errors import (ConfigError, DiskFull, FishermaskError, MemoryLimitError,
                               ParameterError, Terminated, TrainingDiverged)
from fishermask.execution import PoolExecutor, make_executor
from fishermask.locks import RunLock
from fishermask.models import model_from_params, reinit_parameters
from fishermask.strategies import SelectionContext, build_strategy
from fishermask.training import evaluate, train_model


@dataclass
class RoundRecord:
    round: int
    n_labels: int
    accuracy: float
    balanced_accuracy: float
    per_class_accuracy: list[float]
    labels_per_class: list[int]
    picked: list[int]
    query_seconds: float
    train_seconds: float
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def round_seed(seed: int, rnd: int, stream: int) -> int:
    """A 63-bit seed for (run seed, round, stream) — independent of anything else."""
    return int(np.random.SeedSequence([seed, rnd, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


class ActiveLearningLoop:
    """One active-learning run: a config, its data, model and strategy, rounds until the budget.

    The constructor only stores what it is given; :meth:`from_config` builds everything from a
    :class:`~fishermask.config.Config` (data, model, strategy, checks) and takes the run's lock.
    ``tracker`` receives plain values (:class:`~fishermask.tracking.tracker.Tracker`: the config
    and data at the start, each round's record with the records and picks so far, the status at
    the end).  ``on_round(loop, record)`` is called after every round has been checkpointed and
    before the tracker logs it (sweeps report to Tune from it); ``echo``: print a line per round.
    Used as a context manager, the loop releases its lock on exit.
    """

    CKPT = "state.pt"

    def __init__(self, cfg: Config, data, model: torch.nn.Module, strategy, *,
                 checkpoint_dir: str | Path, device: torch.device,
                 executor: Optional[PoolExecutor] = None, tracker=None, progress: bool = True,
                 on_round: Optional[Callable[["ActiveLearningLoop", RoundRecord], None]] = None,
                 lock: Optional[RunLock] = None, echo: bool = True):
        self.cfg, self.data, self.model, self.strategy = cfg, data, model, strategy
        self.initial, self.query, self.rounds = cfg.budget.resolved()
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device, self.executor, self.tracker = device, executor, tracker
        self.progress, self.on_round, self.lock, self.echo = progress, on_round, lock, echo
        self.already_finished = False
        self.labeled = np.zeros(0, dtype=np.int64)
        self.records: list[RoundRecord] = []
        self.initial_indices: list[int] = []
        self.run_id: Optional[str] = None

    @classmethod
    def from_config(cls, cfg: Config, *, executor: Optional[PoolExecutor] = None, tracker=None,
                    checkpoint_dir: Optional[str | Path] = None, progress: bool = True,
                    on_round=None, data=None, lock: Optional[bool] = None,
                    echo: bool = True) -> "ActiveLearningLoop":
        """The loop of ``cfg``: checks the checkpoint folder, loads the data (or uses ``data``),
        builds the model and strategy, runs the checks that would otherwise fail after minutes of
        training, and takes the run's lock.  ``checkpoint_dir`` defaults to
        ``<tracking.checkpoint_dir>/<result key>``; that default folder is locked until the run
        ends (``lock``: force on or off), so a second launch of the same config refuses, naming
        the first."""
        if cfg.execution.threads:
            torch.set_num_threads(cfg.execution.threads)
        default_dir = Path(cfg.tracking.checkpoint_dir).expanduser() / cfg.result_key()
        folder = Path(checkpoint_dir or default_dir).expanduser()
        preflight.writable_folder(folder, "checkpoints (tracking.checkpoint_dir)",
                                  "or set --set tracking.checkpoint_dir=/a/writable/folder")
        data = data if data is not None else load_experiment_data(cfg.data, cfg.seed)
        preflight.budget(cfg, len(data.pool))
        device = preflight.device(cfg.execution)
        strategy = build_strategy(cfg.strategy.name, **cfg.strategy.params)
        torch.manual_seed(round_seed(cfg.seed, 0, 4))  # the initial weights, for reinit: none
        model = model_from_params(cfg.model, data.pool.num_classes, data.pool.in_channels)
        preflight.network(cfg, model, data.pool)
        preflight.mask_capacity(cfg, model, len(data.pool), data.pool.num_classes)
        if executor is None:
            preflight.local_shards(cfg.execution)
        run_lock = None  # last: bad input leaves no file behind
        if lock or (lock is None and checkpoint_dir is None):
            run_lock = RunLock(f"{folder}.lock", f"this run ({cfg.strategy.name}, seed "
                                                 f"{cfg.seed}, checkpoint {folder})").acquire()
        return cls(cfg, data, model, strategy, checkpoint_dir=folder, device=device,
                   executor=executor, tracker=tracker, progress=progress, on_round=on_round,
                   lock=run_lock, echo=echo)

    def __enter__(self) -> "ActiveLearningLoop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the run's lock (if it holds one)."""
        if self.lock is not None:
            self.lock.release()

    def discard_checkpoint(self) -> None:
        """Forget the checkpoint, so that :meth:`run` starts from round 0 (``--restart``)."""
        if self.checkpoint_dir.exists():
            shutil.rmtree(self.checkpoint_dir)

    # -------------------------------------------------------------- checkpoints
    def _ckpt_path(self) -> Path:
        return self.checkpoint_dir / self.CKPT

    def save_checkpoint(self) -> None:
        """Write the checkpoint whole or not at all: serialised in memory, written to a temporary
        file, synced and renamed over the old one.  A failed write removes the temporary file
        (also giving back the space it took); a full disk raises :class:`DiskFull`, naming the
        folder, with the previous checkpoint intact."""
        state = {
            "result_key": self.cfg.result_key(), "labeled": self.labeled,
            "initial": self.initial_indices, "records": [asdict(r) for r in self.records],
            "model": self.model.state_dict(), "run_id": self.run_id,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        path = self._ckpt_path()
        tmp = path.with_suffix(".tmp")
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(buf.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            rnd = self.records[-1].round if self.records else 0
            kept = (f"the checkpoint of round {rnd - 1} in {path.absolute()} is intact"
                    if path.is_file() else "no round was checkpointed yet")
            raise DiskFull(
                f"no space left on the disk of {self.checkpoint_dir.absolute()}: the checkpoint "
                f"of round "
                f"{rnd} ({buf.tell() / 1e6:.1f} MB) could not be written; {kept}. Free space "
                f"there (or set tracking.checkpoint_dir to another disk) and run the same "
                f"command again to resume") from None

    def load_checkpoint(self) -> bool:
        path = self._ckpt_path()
        if not path.is_file():
            return False
        try:
            state = torch.load(path, weights_only=False)
            if state["result_key"] != self.cfg.result_key():
                return False
            labeled = np.asarray(state["labeled"], dtype=np.int64)
            records = [RoundRecord(**r) for r in state["records"]]
            self.model.load_state_dict(state["model"])
            rng = state["rng"]
        except Exception as exc:  # truncated, overwritten or from an incompatible version
            raise FishermaskError(
                f"the checkpoint {path} cannot be read ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it is damaged or was written by another version. Run the "
                f"same command with --restart to start this config from round 0 (or delete "
                f"{self.checkpoint_dir})") from None
        self.labeled, self.records = labeled, records
        self.initial_indices = list(state["initial"])
        self.run_id = state["run_id"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        return True

    # -------------------------------------------------------------- rounds
    def _train_and_eval(self, rnd: int) -> tuple[dict, Any]:
        torch.manual_seed(round_seed(self.cfg.seed, rnd, 1))
        reinit_parameters(self.model, self.cfg.train.reinit)
        gen = torch.Generator().manual_seed(round_seed(self.cfg.seed, rnd, 2))
        try:
            tr = train_model(self.model, self.data.pool, self.labeled, self.cfg.train,
                             augment=self.cfg.data.augment, device=self.device, generator=gen)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"round {rnd}: {exc}. The run is marked FAILED; rounds before "
                                   f"this one stay checkpointed") from None
        ev = evaluate(self.model, self.data.test, device=self.device,
                      batch_size=self.cfg.train.eval_batch_size)
        return ev, tr

    def _record(self, rnd: int, picked, ev, tr, query_seconds: float, sel=None) -> RoundRecord:
        counts = torch.bincount(self.data.pool.targets[torch.as_tensor(self.labeled)],
                                minlength=self.data.pool.num_classes).tolist()
        return RoundRecord(
            round=rnd, n_labels=len(self.labeled), accuracy=ev["accuracy"],
            balanced_accuracy=ev["balanced_accuracy"], per_class_accuracy=ev["per_class_accuracy"],
            labels_per_class=counts, picked=[int(i) for i in picked], query_seconds=query_seconds,
            train_seconds=tr.seconds, epochs=tr.epochs,
            metrics=dict(sel.metrics) if sel else {}, artifacts=dict(sel.artifacts) if sel else {},
            diagnostics=jsonable(sel.diagnostics) if sel else {})

    def _query(self, rnd: int):
        pool = self.data.pool
        unlabeled = np.setdiff1d(np.arange(len(pool)), self.labeled)
        self.executor.set_model(self.model)
        ctx = SelectionContext(model=self.model, executor=self.executor, labeled=self.labeled,
                               unlabeled=unlabeled, num_classes=pool.num_classes,
                               rng=np.random.default_rng(round_seed(self.cfg.seed, rnd, 3)), round=rnd,
                               classifier=self.cfg.model.classifier)
        t0 = time.perf_counter()
        try:
            sel = self.strategy.run_round(ctx, self.query)
        except MemoryLimitError as exc:  # name the config keys that set the parameters
            raise exc.renamed(CONFIG_KEYS) from None
        except ParameterError as exc:
            raise ConfigError(f"strategy.{exc}") from None
        return sel, time.perf_counter() - t0

    def run(self) -> list[RoundRecord]:
        """All rounds (resuming from the checkpoint); the run's lock is held meanwhile and
        released at the end."""
        if self.lock is not None:
            self.lock.acquire()
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> list[RoundRecord]:
        from tqdm.auto import tqdm

        resumed = self.load_checkpoint()
        self.already_finished = resumed and len(self.records) > self.rounds
        if self.tracker is not None:
            self.run_id = self.tracker.start(self.cfg, self.data, run_id=self.run_id)
            for i, rec in enumerate(self.records):  # a resumed run's store gets every round
                self.tracker.log_round(rec, self.records, self.selected_indices(),
                                       replay=i + 1 < len(self.records))
        own_executor = self.executor is None and not self.already_finished
        if own_executor:
            self.executor = make_executor(self.cfg.execution)
        bar = tqdm(total=self.rounds + 1, initial=len(self.records), disable=not self.progress,
                   desc=f"{self.cfg.strategy.name} seed {self.cfg.seed}", unit="round")
        if self.already_finished and self.echo:
            bar.write(f"this run already finished all {self.rounds} rounds (checkpoint "
                      f"{self._ckpt_path()}); nothing to resume. Use --restart to run it again "
                      f"from round 0")
        elif resumed and self.echo:
            bar.write(f"resuming from {self._ckpt_path()} after round {self.records[-1].round}")
        status, error = "FAILED", None
        try:
            if self.already_finished:
                status = "FINISHED"
                return self.records
            self.executor.bind(self.data.pool)
            if not self.records:
                rng = np.random.default_rng(round_seed(self.cfg.seed, 0, 0))
                self.labeled = initial_labeled(self.data.pool, self.initial, rng)
                self.initial_indices = self.labeled.tolist()
                ev, tr = self._train_and_eval(0)
                self._finish_round(self._record(0, [], ev, tr, 0.0), bar)
            while len(self.records) <= self.rounds:
                Terminated.check()
                rnd = len(self.records)
                sel, q_seconds = self._query(rnd)
                self.labeled = np.sort(np.concatenate([self.labeled, sel.indices]))
                ev, tr = self._train_and_eval(rnd)
                self._finish_round(self._record(rnd, sel.indices, ev, tr, q_seconds, sel), bar)
            status = "FINISHED"
        except BaseException as exc:  # Ctrl-C or SIGTERM: the last finished round is checkpointed
            status, error = ("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"), exc
            raise
        finally:
            bar.close()
            try:
                self._end(status, error)
            finally:
                if own_executor:
                    self.executor.close()
        return self.records

    def _end(self, status: str, error: Optional[BaseException]) -> None:
        """The tracker's end of the run.  When the run is already failing, an error of the tracker
        (e.g. the same full disk) never replaces the first one: its message says what it left."""
        if self.tracker is None:
            return
        try:
            self.tracker.finish(self.records, status)
        except Exception as exc:
            if error is None:
                raise
            what = (f"; the run could not be recorded as {status} in MLflow either "
                    f"({str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}), "
                    f"the next run of this command sets it")
            if isinstance(error, FishermaskError):
                error.args = (f"{error}{what}",)
            elif hasattr(error, "add_note"):
                error.add_note(what[2:])

    def _finish_round(self, rec: RoundRecord, bar) -> None:
        """Checkpoint the round, hand it to ``on_round`` (a sweep's report to Tune), then to the
        tracker: a tracking server that does not answer holds up the logging, never the round."""
        self.records.append(rec)
        self.save_checkpoint()
        if self.on_round is not None:
            self.on_round(self, rec)
        if self.tracker is not None:
            self.tracker.log_round(rec, self.records, self.selected_indices())
        bar.update(1)
        if self.echo:
            bar.write(f"round {rec.round:>3}  labels {rec.n_labels:>6}  acc {rec.accuracy:.4f}  "
                      f"bal-acc {rec.balanced_accuracy:.4f}  query {rec.query_seconds:7.2f}s  "
                      f"train {rec.train_seconds:7.2f}s ({rec.epochs} ep)")

    def selected_indices(self) -> dict[str, Any]:
        return {"initial": list(self.initial_indices),
                "rounds": [r.picked for r in self.records[1:]]}


def jsonable(obj):
    """``obj`` with numpy numbers and tensors turned into plain Python (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
