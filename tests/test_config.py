"""Config schema: overrides, defaults, and every user error the CLI reports with exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fishermask.cli import main
from fishermask.config import from_dict, load_config
from fishermask.errors import ConfigError
from fishermask.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "sweeps" / "quickstart.yaml"


def test_quickstart_loads_and_set_overrides():
    cfg = load_config(QUICK, ["strategy.name=fishermask", "seed=3", "strategy.sparsity=0.01",
                              "train.lr=5e-4"])
    assert cfg.strategy.name == "fishermask" and cfg.seed == 3 and cfg.train.lr == 5e-4
    assert cfg.strategy.params["sparsity"] == 0.01
    assert cfg.strategy.params["mask_samples"] == 1024  # strategy defaults are resolved
    flat = cfg.flat()
    assert flat["strategy.name"] == "fishermask" and flat["data.dataset"] == "digits"


def test_params_of_other_strategies_are_dropped_for_sweeps():
    cfg = from_dict({"strategy": {"name": "entropy", "sparsity": 0.02, "lam": 0.01}})
    assert cfg.strategy.params == {}
    cfg = from_dict({"strategy": {"name": "bait", "sparsity": 0.02, "lam": 0.01}})
    assert cfg.strategy.params["lam"] == 0.01 and "sparsity" not in cfg.strategy.params


def test_strategy_presets_differ():
    a = from_dict({"strategy": {"name": "fishermask"}}).strategy.params
    b = from_dict({"strategy": {"name": "fishermask_authors"}}).strategy.params
    assert a["prob_scaling"] is True and b["prob_scaling"] is False
    assert from_dict({"strategy": {"name": "bait"}}).strategy.params["oversample"] == 2


@pytest.mark.parametrize("regime,expect", [("low", (15, 70, 8)), ("high", (250, 250, 22)),
                                           ("setting2", (500, 500, 12))])
def test_regimes(regime, expect):
    assert from_dict({"budget": {"regime": regime}}).budget.resolved() == expect


def test_sweep_block_is_kept_but_not_part_of_run_config(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"experiment": "x", "sweep": {"seed": [0, 1]}}))
    cfg = load_config(f)
    assert cfg.sweep == {"seed": [0, 1]} and "sweep" not in cfg.to_dict()


@pytest.mark.parametrize("overrides,fragment", [
    (["strategy.name=no_such_strategy"], "valid strategies: random, entropy"),
    (["data.datasett=digits"], "unknown key 'data.datasett'"),
    (["train.lr=abc"], "train.lr"),
    (["model.name=vgg"], "model.name"),
    (["data.dataset=mnist"], "data.dataset"),
    (["strategy.name=fishermask", "strategy.sparsity=-1"], "strategy (fishermask).sparsity"),
    (["strategy.name=entropy", "strategy.sparsty=0.1"], "unknown key 'strategy (entropy).sparsty'"),
    (["budget.total=33"], "budget.total=33"),
    (["nonsense"], "KEY=VALUE"),
])
def test_config_errors_are_clear(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(QUICK, overrides)
    assert fragment in str(err.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(QUICK, ["train.learning_rate=0.1"])
    assert "valid keys here:" in str(err.value) and "lr" in str(err.value)


@pytest.mark.integration
@pytest.mark.parametrize("overrides,fragment", [
    (["strategy.name=no_such_strategy"], "valid strategies"),
    (["budget.rounds=40"], "pool has only"),
    (["data.class_counts=[500, 3]"], "data.class_counts"),
    (["data.dataset=fashion_mnist", "data.data_dir=nowhere"], "data.download"),
])
def test_cli_exit_code_2_without_traceback(overrides, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", str(QUICK), "--no-progress"] + [x for o in overrides for x in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / ".fishermask").exists()  # failed before writing anything


@pytest.mark.integration
def test_cli_subprocess_unknown_strategy(tmp_path):
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-m", "fishermask", "run", str(QUICK), "--set",
                           "strategy.name=no_such_strategy"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for name in STRATEGIES:
        assert name in proc.stderr


def test_result_key_hashes_only_what_differs_from_the_defaults():
    base = from_dict({"strategy": {"name": "fishermask"}})
    spelled_out = from_dict({"strategy": {"name": "fishermask", "sparsity": 0.002},
                             "train": {"bn_recalibrate": False}, "data": {"data_dir": "/elsewhere"},
                             "execution": {"shards": 4}})
    assert spelled_out.result_key() == base.result_key()  # defaults, location, layout: same key
    assert from_dict({"strategy": {"name": "random"}}).result_key() != base.result_key()
    changed = [from_dict({"strategy": {"name": "fishermask", "sparsity": 0.01}}),
               from_dict({"strategy": {"name": "fishermask"}, "train": {"bn_recalibrate": True}}),
               from_dict({"strategy": {"name": "fishermask"}, "seed": 1})]
    assert len({c.result_key() for c in changed} | {base.result_key()}) == 4
