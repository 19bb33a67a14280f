"""What ``fishermask report`` leaves in MLflow, so that the UI agrees with the report:

* on the sweep's parent run: the report's files under ``report/`` (``report.html`` first), the
  per-variant numbers as metrics (``variant_aubc/<variant>``, ``variant_aubc_ci95/<variant>``,
  ``variant_aubc_vs_<baseline>/<variant>``, ``variant_final/<variant>``, for the report's metric)
  and as a table (``report/variants.json``), every comparison the report shows with its p, Holm p
  and seeds needed (the file ``report/comparisons.json`` and the table
  ``report/comparisons_table.json``), the target (``target/<metric>``), and the best variant by
  AUBC in its description;
* on every reported child run: ``labels_to_target/<metric>`` (labels the run needed to reach the
  report's target; NaN when it never did) and that target (``target/<metric>``).

Every value is logged at the time of the report, so the newest report's numbers are the ones the
UI shows.
"""

from __future__ import annotations

import math
import posixpath
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fishermask.reports.data import ci95, labels_to_reach
from fishermask.reports.stats import as_json
from fishermask.tracking.run_meta import metric_key, NOTE_TAG, ui_base

BEST_MARK = "**Best variant by AUBC"


def variant_table(res: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """One row per variant: seeds, AUBC mean and 95 % CI of the mean for both metrics, the
    difference to the baseline, and the final value."""
    rows = []
    for r in res["rows"]:
        v = r["variant"]
        row: dict[str, Any] = {"variant": v, "strategy": res["groups"][v][0].strategy,
                               "seeds": r["n"]}
        for m in ("accuracy", "balanced_accuracy"):
            vals = list(res["scores"][v][m].values())
            row[f"aubc_{m}"] = float(np.mean(vals))
            row[f"aubc_{m}_ci95"] = ci95(vals)
            row[f"final_{m}"] = r["final_" + m][0]
        row["baseline"] = r["ref"] or ""
        row[f"aubc_{metric}_vs_baseline"] = r["diff"]["diff"]
        row[f"aubc_{metric}_vs_baseline_ci95"] = r["diff"]["ci"]
        rows.append(row)
    return rows


def best_line(table: list[dict[str, Any]], metric: str) -> str:
    best = max(table, key=lambda r: r[f"aubc_{metric}"])
    ci = best[f"aubc_{metric}_ci95"]
    spread = "" if math.isnan(ci) else f" ± {ci:.4f} (95 % CI)"
    return (f"{BEST_MARK} ({metric.replace('_', ' ')}):** {best['variant']}, "
            f"{best[f'aubc_{metric}']:.4f}{spread} over {best['seeds']} seeds "
            f"(from `fishermask report`; details in `report/report.html`).")


def _with_best(note: str, line: str) -> str:
    kept = [p for p in note.split("\n\n") if not p.startswith(BEST_MARK)] if note else []
    return "\n\n".join(kept + [line])


def mlflow_markdown(text: str, tracking_uri: str, run_id: str) -> str:
    """``summary.md`` for MLflow's artifact preview, which shows only images with absolute
    http(s) URLs: each figure points at the UI's ``get-artifact`` endpoint (a tracking server's
    own address, else ``mlflow ui`` on the documented port)."""
    from urllib.parse import quote

    base = ui_base(tracking_uri)

    def url(m: re.Match) -> str:
        path = quote(f"report/{m.group(2)}", safe="/")
        return f"![{m.group(1)}]({base}/get-artifact?path={path}&run_uuid={run_id})"

    note = ("*Figures are served by the MLflow UI at " + base + "; `report.html` beside this file "
            "has them inline.*")
    body = re.sub(r"!\[([^\]]*)\]\(([^)/:]+\.png)\)", url, text)
    head, _, rest = body.partition("\n")
    return f"{head}\n\n{note}\n{rest}"


def log_table(client, run_id: str, rows: list[dict[str, Any]], path: str) -> None:
    """``rows`` as an MLflow table at ``path`` (``MlflowClient.log_table``), replacing the table of
    an earlier report: ``log_table`` appends to an existing file, so the file is then rewritten in
    its format (pandas' ``split`` JSON) and logged over the old one."""
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    folder, name = posixpath.split(path)
    if path not in {f.path for f in client.list_artifacts(run_id, folder)}:
        client.log_table(run_id, columns, path)  # the first time: also marks it a table for the UI
        return
    import pandas as pd  # mlflow's own dependency, as in log_table

    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(columns).to_json(Path(tmp) / name, orient="split", index=False)
        client.log_artifact(run_id, str(Path(tmp) / name), folder)


def log_report(client, parent, runs, res: dict[str, Any], metric: str) -> None:
    from mlflow.entities import Metric

    target = res["target"]
    now = int(time.time() * 1000)  # a later report's values replace an earlier one's (NaN too)
    for r in runs:
        hit = labels_to_reach(r.steps, r.curves[metric], target)
        client.log_batch(r.run_id, metrics=[
            Metric(f"labels_to_target/{metric}", math.nan if hit is None else float(hit), now, 0),
            Metric(f"target/{metric}", float(target), now, 0)])
    if parent is None:
        return
    pid = parent.info.run_id
    files = res["files"]
    for name in ("html", *[k for k in files if k not in ("html", "summary")]):
        if name in files:
            client.log_artifact(pid, str(files[name]), "report")
    client.log_text(pid, mlflow_markdown(files["summary"].read_text(), client.tracking_uri, pid),
                    "report/summary.md")
    table = variant_table(res, metric)
    base = re.sub(r"[^A-Za-z0-9_]+", "_", table[0]["baseline"] or "baseline") if table else ""
    metrics = [Metric(f"target/{metric}", float(target), now, 0)]
    for row in table:
        key = metric_key(row["variant"])
        values = {f"variant_aubc/{key}": row[f"aubc_{metric}"],
                  f"variant_aubc_ci95/{key}": row[f"aubc_{metric}_ci95"],
                  f"variant_final/{key}": row[f"final_{metric}"]}
        if row["baseline"] and row["baseline"] != row["variant"]:
            values[f"variant_aubc_vs_{base}/{key}"] = row[f"aubc_{metric}_vs_baseline"]
        metrics += [Metric(k, float(v), now, 0) for k, v in values.items()]
    for i in range(0, len(metrics), 500):
        client.log_batch(pid, metrics=metrics[i:i + 500])
    log_table(client, pid, as_json(table), "report/variants.json")
    comparisons = as_json(res["comparisons"])
    if comparisons:  # the UI's table view of comparisons.json (logged above with the files)
        log_table(client, pid, comparisons, "report/comparisons_table.json")
    note = parent.data.tags.get(NOTE_TAG, "")
    client.set_tag(pid, NOTE_TAG, _with_best(note, best_line(table, metric)))
