"""cluster.yaml validates against the Ray cluster-launcher schema shipped in the ray wheel, and has
the pieces the README's walk-through relies on."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).parents[1]


def _config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_config(), schema)
    # and Ray's own launcher checks (defaults filled in, node types, docker)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_config()))


def test_cluster_yaml_layout():
    cfg = _config()
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]  # no trials there
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in workers)
    assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)  # GPUs
    assert cfg["docker"]["image"].endswith("-gpu")
    assert any("pip install" in c and "fishermask" in c for c in cfg["setup_commands"])
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_start and "mlflow server" in head_start
    assert "--port 5000" in head_start and "--host 0.0.0.0" in head_start
    assert "/work" not in (ROOT / "cluster.yaml").read_text()


def test_cluster_yaml_token_authentication_on_every_node():
    """Ray's token authentication: every container runs with RAY_AUTH_MODE=token (ray start on
    the head and the workers, the trials, `ray job submit` entrypoints) and every node gets the
    same token file from the launcher's machine."""
    cfg = _config()
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    head = (ROOT / "cluster.yaml").read_text().split("cluster_name:")[0]
    assert "export RAY_AUTH_MODE=token" in head and "ray get-auth-token --generate" in head
    # the launcher expands the source of a file mount on the machine that runs `ray up`
    from ray.autoscaler._private.util import prepare_config

    assert "/home/ray/.ray/auth_token" in prepare_config(_config())["file_mounts"]
