"""The mistakes users make, through the real command line: each case ends with exit code 2, one
``error:`` message that names what is wrong and the fix, no traceback, and nothing created that
could be lost or mistaken for a result (no MLflow store, no checkpoint)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from fishermask.cli import main

pytestmark = pytest.mark.integration  # Ray, an MLflow server, the CLI or the loop

TINY = """\
experiment: bad
data: {dataset: digits, class_counts: [12, 12, 12, 40]}
budget: {initial: 8, query: 6, rounds: 1}
train: {max_epochs: 2, batch_size: 16}
"""
SWEEP = TINY + "sweep:\n  strategy.name: [random, entropy]\n"


def tiny(tmp: Path, text: str = TINY, name: str = "c.yaml") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def fashion_gz_with_wrong_content(tmp: Path) -> list[str]:
    raw = tmp / "fm" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"):
        with gzip.open(raw / f"{f}.gz", "wb") as out:
            out.write(b"<html>not the dataset</html>" * 20)
    return ["run", tiny(tmp), "--set", "data.dataset=fashion_mnist", "--set",
            f"data.data_dir={tmp / 'fm'}"]


def folder_with_truncated_image(tmp: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp / "img" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                tmp / "img" / c / f"{i}.png")
    bad = tmp / "img" / "b" / "2.png"
    bad.write_bytes(bad.read_bytes()[:60])
    return ["run", tiny(tmp), "--set", "data.dataset=image_folder", "--set",
            f"data.data_dir={tmp / 'img'}", "--set", "data.class_counts=null"]


def fishermask_file_as_folder(tmp: Path) -> list[str]:
    (tmp / ".fishermask").write_text("not a folder")
    return ["run", tiny(tmp)]


# (case id, argv or setup(tmp) -> argv, fragment of the one error message)
CASES = [
    ("empty yaml", lambda t: ["run", tiny(t, "# only a comment\n")], "the file is empty"),
    ("not utf-8", lambda t: ["run", _latin1(t)], "not UTF-8 text"),
    ("experiment empty", lambda t: ["run", tiny(t), "--set", "experiment="],
     "experiment: the MLflow experiment needs a name"),
    ("lr infinite", lambda t: ["run", tiny(t), "--set", "train.lr=.inf"], "train.lr"),
    ("strategy lam infinite", lambda t: ["run", tiny(t), "--set", "strategy.name=bait", "--set",
                                    "strategy.lam=.inf"], "strategy.lam: must be a finite"),
    ("mask_samples 0", lambda t: ["run", tiny(t), "--set", "strategy.name=fishermask", "--set",
                                  "strategy.mask_samples=0"], "mask_samples"),
    ("huge image_size", lambda t: ["run", tiny(t), "--set", "data.image_size=100000"],
     "data.image_size: Input should be less than or equal to 1024"),
    ("one-class pool", lambda t: ["run", tiny(t), "--set", "data.class_counts=[0, 0, 50]"],
     "needs at least 2"),
    ("fishermask default sparsity", lambda t: ["run", tiny(t), "--set", "strategy.name=fishermask"],
     "The smallest valid sparsity is 0.005482"),
    ("fishermask empty mask", lambda t: ["run", tiny(t), "--set", "strategy.name=fishermask",
                                         "--set", "strategy.sparsity=1e-6", "--set",
                                         "strategy.include_last_layer=false"],
     "k=0 weights"),
    ("fishermask sparsity 1", lambda t: ["run", tiny(t), "--set", "strategy.name=fishermask",
                                         "--set", "strategy.sparsity=1"],
     "execution.max_memory_gb"),
    ("too many shards", lambda t: ["run", tiny(t), "--set", "execution.shards=1000"],
     "execution.shards=1000 × execution.cpus_per_shard=1 needs 1000 CPUs"),
    ("unreachable server", lambda t: ["run", tiny(t), "--tracking-uri", "http://127.0.0.1:9"],
     "cannot reach the MLflow tracking server at http://127.0.0.1:9"),
    ("malformed uri scheme", lambda t: ["run", tiny(t), "--tracking-uri", "htp://127.0.0.1:5000"],
     "unknown scheme 'htp'"),
    ("uri without host", lambda t: ["run", tiny(t), "--tracking-uri", "http://:5000"], "no host"),
    (".fishermask is a file", fishermask_file_as_folder, ".fishermask exists but is a file"),
    ("fashion gz wrong content", fashion_gz_with_wrong_content, "are not the Fashion-MNIST data"),
    ("truncated image", folder_with_truncated_image, "cannot read the image"),
    ("sweep axis typo", lambda t: ["sweep", tiny(t, SWEEP + "  strategy.sparsty: [0.1, 0.2]\n"),
                                   "--dry-run"], "no strategy takes the parameter(s) 'sparsty'"),
    ("sweep shards", lambda t: ["sweep", tiny(t, SWEEP), "--set", "execution.shards=64",
                                "--storage", str(t / "st")], "needs 65 CPUs"),
    ("sweep fishermask sparsity", lambda t: ["sweep", tiny(t, SWEEP.replace(
        "entropy", "fishermask")), "--storage", str(t / "st")], "smallest valid sparsity"),
    ("sweep unreachable server", lambda t: ["sweep", tiny(t, SWEEP), "--storage", str(t / "st"),
                                            "--tracking-uri", "http://127.0.0.1:9"],
     "cannot reach"),
    ("report unreachable server", lambda t: ["report", "--experiment", "bad", "--out",
                                             str(t / "r"), "--tracking-uri", "http://127.0.0.1:9"],
     "cannot reach"),
    ("max-concurrent 0", lambda t: ["sweep", tiny(t, SWEEP), "--max-concurrent", "0"],
     "--max-concurrent: must be at least 1"),
    ("max-failures negative", lambda t: ["sweep", tiny(t, SWEEP), "--max-failures", "-1"],
     "--max-failures: must be at least 0"),
]


def _latin1(tmp: Path) -> str:
    path = tmp / "latin1.yaml"
    path.write_bytes("experiment: café\n".encode("latin-1"))
    return str(path)


def run_cli(argv: list[str], capfd) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("case,setup,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_message(case, setup, fragment, tmp_path, capfd,
                                            monkeypatch):
    monkeypatch.setenv("FISHERMASK_CACHE", str(tmp_path / "cache"))
    argv = setup(tmp_path)
    t0 = time.monotonic()
    code, out, err = run_cli(argv, capfd)
    assert code == 2, (out, err)
    assert fragment in err, err
    assert "Traceback" not in err + out
    messages = [line for line in err.splitlines() if line.startswith("error:")
                or ": error: " in line]
    assert len(messages) == 1, err
    # it failed before the work: nothing was logged or checkpointed that could be lost
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert not list(tmp_path.glob(".fishermask/checkpoints/*/state.pt"))
    assert time.monotonic() - t0 < 15, "a user error must be reported in seconds"


def test_dotted_sweep_axis_can_be_narrowed_from_the_command_line(tmp_path, capfd):
    path = tiny(tmp_path, SWEEP + "  seed: [0, 1]\n")
    code, out, err = run_cli(["sweep", path, "--dry-run", "--set",
                              "sweep.strategy.name=[random, margin]", "--set", "sweep.seed=[3]"],
                             capfd)
    assert code == 0, err
    assert "2 trials" in out and "margin seed=3" in out and "entropy" not in out


def test_tilde_in_checkpoint_dir_is_the_home_folder(tmp_path, capfd, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    path = tiny(tmp_path, TINY + "tracking: {checkpoint_dir: ~/ckpt}\n")
    code, out, err = run_cli(["run", path, "--no-progress", "--tracking-uri",
                              "sqlite:///~/mlflow.db"], capfd)
    assert code == 0, err
    assert list(home.glob("ckpt/*/state.pt")) and (home / "mlflow.db").is_file()
    assert not (tmp_path / "~").exists()
    # the same command again: the run is finished, nothing is rerun
    code, out, err = run_cli(["run", path, "--no-progress", "--tracking-uri",
                              "sqlite:///~/mlflow.db"], capfd)
    assert code == 0 and "already finished all 1 rounds" in out + err
    assert "resuming" not in out + err


def test_second_sweep_launch_refuses_naming_the_first(tmp_path, capfd):
    import os
    import subprocess
    import sys

    storage = tmp_path / "st"
    holder = subprocess.Popen(  # a real other process holding the sweep's lock
        [sys.executable, "-c", "import sys, time; from fishermask.locks import RunLock; "
         "RunLock(sys.argv[1], 'sweep').acquire(); print('held', flush=True); time.sleep(60)",
         f"{storage}/bad-c.lock"], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = run_cli(["sweep", tiny(tmp_path, SWEEP), "--storage", str(storage)], capfd)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and f"pid {holder.pid}" in err and "is already running" in err
    assert "Traceback" not in err and not (tmp_path / "mlflow.db").exists()
