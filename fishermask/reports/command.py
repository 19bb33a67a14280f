"""``fishermask report``: figures and a markdown summary of a sweep from its MLflow runs.

``fishermask report (--experiment NAME | --run PARENT_RUN_ID) [--out DIR]`` writes to ``DIR``:

* ``learning_curves.png`` — accuracy and balanced accuracy vs labels, mean ± std over seeds;
* ``aubc.png`` — each variant's normalised area under the budget curve minus the baseline's
  (``random``), with a 95 % t-interval over seeds (paired by seed where the seeds match);
* ``class_balance.png`` — labels per class at the end of the budget;
* ``mask_profile.png`` — FisherMask's fraction of every parameter tensor in the mask (Fig. 2),
  rounds × tensors by name;
* ``summary.md`` — the tables (AUBC, labels to reach ``--target``, class balance, mask profile),
  each comparison with its p value and its Holm-adjusted p within its table, and the seeds each
  comparison needs for 80 % power at the observed gap and at ``--min-gap``;
* ``comparisons.json`` — one row per comparison the report shows (``reports.stats``);
* ``report.html`` — all of it in one self-contained file (figures inline);

and logs them to the sweep's parent run under ``report/`` (plus per-variant summary metrics, a
``report/variants.json`` table, the comparisons as a table and the best variant in the parent's
description; see ``reports.mlflow_log``).  Only FINISHED child runs count; runs that share a
variant label but not the config are reported as separate variants, and a seed run twice counts
once (its newest run).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from fishermask import preflight
from fishermask.errors import FishermaskError
from fishermask.reports import mlflow_log as report_mlflow
from fishermask.reports import sections
from fishermask.reports import stats
from fishermask.reports.sections import pm, std
from fishermask.reports.data import (aubc, baseline_for, child_runs, ci95, diff_ci, find_parent,
                                     group, labels_to_reach, load_run, mean_curve, split_configs)
from fishermask.reports.html import write_html
from fishermask.sweeps.grid import absolute_tracking_uri


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="figures and tables of a sweep from its MLflow runs")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--experiment", help="MLflow experiment: its newest sweep is reported")
    who.add_argument("--run", metavar="PARENT_RUN_ID", help="a sweep's parent run id")
    p.add_argument("--out", default="report", help="output folder (default: report)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLflow's default, sqlite:///mlflow.db here)")
    p.add_argument("--target", type=float, default=None,
                   help="accuracy to reach for the labels-needed table (default: the baseline's "
                        "mean final accuracy)")
    p.add_argument("--metric", choices=["accuracy", "balanced_accuracy"], default="accuracy",
                   help="metric of the AUBC differences and the target (default accuracy)")
    p.add_argument("--baseline", default=None,
                   help="strategy to compare with (default random, when the runs have it)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="report only these seeds (e.g. the seeds every strategy has finished)")
    p.add_argument("--min-gap", type=float, default=0.01, metavar="AUBC",
                   help="AUBC gap to plan seeds for in the seeds-needed table (default 0.01)")
    p.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")


def build_report(runs, out: Path, *, title: str, metric: str = "accuracy",
                 baseline: str = "random", target: Optional[float] = None,
                 notes: Optional[list[str]] = None, min_gap: float = 0.01) -> dict[str, Any]:
    """Write the figures, ``summary.md``, ``comparisons.json`` and ``report.html`` for ``runs``
    (RunData) into ``out``."""
    import numpy as np

    from fishermask.reports import plots

    out.mkdir(parents=True, exist_ok=True)
    groups = group(runs)
    scores = {v: {m: {r.seed: aubc(r.steps, r.curves[m]) for r in rs} for m in ("accuracy",
              "balanced_accuracy")} for v, rs in groups.items()}
    rows = []
    for v, rs in groups.items():
        ref = baseline_for(rs, groups, baseline)
        row = {"variant": v, "ref": ref, "n": len(rs), "seeds": [r.seed for r in rs]}
        for m in ("accuracy", "balanced_accuracy"):
            vals = list(scores[v][m].values())
            row[m] = (float(np.mean(vals)), ci95(vals))
            finals = [r.curves[m][-1] for r in rs]
            row["final_" + m] = (float(np.mean(finals)), std(finals))
        row["diff"] = (diff_ci(scores[v][metric], scores[ref][metric]) if ref and ref != v
                       else {"diff": math.nan, "ci": math.nan, "n": 0, "paired": False})
        rows.append(row)

    ref_rows = [r for r in rows if groups[r["variant"]][0].strategy == baseline]
    if target is None:
        target = ref_rows[0]["final_" + metric][0] if ref_rows else 0.9
    files = {"learning_curves": plots.learning_curves(groups, out / "learning_curves.png", title,
                                                      baseline),
             "aubc": plots.aubc_diffs(rows, out / "aubc.png", metric.replace("_", " "), baseline)}
    if any(r.labels_per_class for r in runs):
        files["class_balance"] = plots.class_balance(groups, out / "class_balance.png")
    mp = plots.mask_profile(groups, out / "mask_profile.png")
    if mp is not None:
        files["mask_profile"] = mp
        files["mask_by_tensor"] = plots.mask_by_tensor(groups, out / "mask_by_tensor.png")

    families = {"base": stats.family(f"vs {baseline}", [(r["variant"], r["ref"]) for r in rows
                                                         if r["ref"] and r["ref"] != r["variant"]],
                                     scores, metric, min_gap),
                "versus": stats.family("fishermask vs others", sections.versus_pairs(groups),
                                       scores, metric, min_gap),
                "ablation": stats.family("fishermask ablation",
                                         sections.ablation_pairs(groups, baseline), scores,
                                         metric, min_gap)}
    comparisons = [c for fam in families.values() for c in fam]
    L = [f"# Report: {title}", "",
         f"{len(runs)} finished runs in {len(groups)} variants; seeds per variant: "
         + ", ".join(f"{v} {r['n']}" for v, r in zip(groups, rows)) + ".", "",
         *[f"- note: {n}" for n in notes or []], *([""] if notes else []),
         *_aubc_section(rows, families["base"], baseline, metric)]
    L += ["![learning curves](learning_curves.png)", "", "![AUBC](aubc.png)", ""]
    L += (sections.versus(scores, metric, families["versus"])
          + sections.ablation(groups, scores, metric, families["ablation"], baseline)
          + sections.seeds_needed(comparisons, min_gap)
          + sections.budget(runs, metric))
    L += [
          f"## Labels needed to reach {metric.replace('_', ' ')} {target:.4f}", "",
          "| variant | seeds reaching | labels (mean ± std over those) | labels on the mean curve |",
          "|---|---|---|---|"]
    for v, rs in groups.items():
        hits = [labels_to_reach(r.steps, r.curves[metric], target) for r in rs]
        got = [h for h in hits if h is not None]
        steps, mean, _ = mean_curve(rs, metric)
        on_mean = labels_to_reach(steps, mean, target) if len(steps) else None
        L.append(f"| {v} | {len(got)}/{len(rs)} | "
                 f"{pm(float(np.mean(got)), std(got), '{:.0f}') if got else 'not reached'} | "
                 f"{on_mean if on_mean is not None else 'not reached'} |")
    n_cls = max((len(r.labels_per_class) for r in runs), default=0)
    L += [""] + (_class_balance(groups, n_cls) if n_cls else []) + sections.rare_labels(groups)
    if "mask_profile" in files:
        L += sections.mask(groups)
    L += sections.training(groups) + sections.wall_time(runs)
    (out / "summary.md").write_text("\n".join(L) + "\n")
    files["summary"] = out / "summary.md"
    (out / "comparisons.json").write_text(json.dumps(stats.as_json(comparisons), indent=1) + "\n")
    files["comparisons"] = out / "comparisons.json"

    files["html"] = write_html(files["summary"], out / "report.html", f"Report: {title}")
    return {"files": files, "rows": rows, "target": target, "groups": groups, "scores": scores,
            "comparisons": comparisons}


def _aubc_section(rows, family: list[dict], baseline: str, metric: str) -> list[str]:
    """The AUBC table: per variant the AUBC of both metrics, Δ to the baseline of its
    configuration with p and Holm p (``family``: the rows of those comparisons), the final
    accuracies; then which Δ are significant after Holm."""
    tests = {c["a"]: c for c in family}
    L = ["## Area under the budget curve", "",
         f"Normalised AUBC = area under the curve of test accuracy against the number of labels, "
         f"divided by the labels axis' width (mean accuracy over the budget). AUBC: mean ± 95 % "
         f"CI of the mean over seeds (t-interval); Δ = difference to `{baseline}` in "
         f"{metric.replace('_', ' ')} AUBC ± 95 % CI over seeds (t-interval; paired by seed when "
         f"the seeds match); final: the last round's test accuracy, mean ± std over seeds.", "",
         "p = two-sided t-test of a Δ over seeds (paired by seed; Welch's where the seeds do not "
         "match); Holm p = that p adjusted for the comparisons of its table (Holm's step-down, "
         "one family per table). A comparison is called significant only where its Holm p < "
         f"{stats.ALPHA:g}; the 95 % CIs are not adjusted. Every comparison, with the seeds it "
         "needs, is in `comparisons.json`.", "",
         "| variant | seeds | AUBC acc. | AUBC bal. acc. | Δ vs " + baseline + " | p | Holm p | "
         "final acc. | final bal. acc. |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, c = r["diff"], tests.get(r["variant"])
        dtxt = ("–" if math.isnan(d["diff"]) else pm(d["diff"], d["ci"], "{:+.4f}")
                + f" ({'paired, ' if d['paired'] else ''}n={d['n']})")
        ptxt = f"{sections.p_text(c['p'])} | {sections.p_text(c['p_holm'])}" if c else "– | –"
        L.append(f"| {r['variant']} | {r['n']} | {pm(*r['accuracy'])} | "
                 f"{pm(*r['balanced_accuracy'])} | {dtxt} | {ptxt} | {pm(*r['final_accuracy'])} | "
                 f"{pm(*r['final_balanced_accuracy'])} |")
    return L + [""] + sections.holm_note(family)


def _class_balance(groups, n_cls: int) -> list[str]:
    import numpy as np

    L = ["## Class balance of the picks", "",
          "Labels per class at the end of the budget (mean over seeds); min/max = the rarest "
          "class' count over the most frequent one's.", "",
          "| variant | " + " | ".join(str(c) for c in range(n_cls)) + " | min/max |",
          "|---|" + "---|" * (n_cls + 1)]
    for v, rs in groups.items():
        per = [float(np.mean([r.labels_per_class[c] for r in rs if c < len(r.labels_per_class)]
                             or [0])) for c in range(n_cls)]
        ratio = min(per) / max(per) if per and max(per) > 0 else math.nan
        text = ("–" if math.isnan(ratio) else "0" if ratio == 0 else
                "<0.01" if ratio < 0.005 else f"{ratio:.2f}")
        L.append(f"| {v} | " + " | ".join(f"{x:.1f}" for x in per) + f" | {text} |")
    return L + ["", "![class balance](class_balance.png)", ""]


def _check_store(args, uri: str) -> None:
    """``report`` reads a store: never create one (a missing sqlite file is a wrong folder)."""
    import re

    m = re.match(r"^sqlite:///(.+)$", uri)
    if m and m.group(1) != ":memory:" and not Path(m.group(1)).is_file():
        how = ("--tracking-uri" if args.tracking_uri else
               "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else
               "the default store of this folder")
        raise FishermaskError(f"no MLflow store at {uri} ({how}): run the report in the folder "
                              f"where the sweep ran, or pass --tracking-uri (e.g. "
                              f"sqlite:///path/to/mlflow.db or http://127.0.0.1:5000)")


def _out_folder(path: str, create: bool = True) -> Path:
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise FishermaskError(f"--out {path} is a file; give a folder for the report (e.g. "
                              f"--out report)")
    if not create:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FishermaskError(f"--out {path}: cannot create the folder ({exc.strerror}); give a "
                              f"writable folder") from None
    return out


def _baseline(requested: Optional[str], runs) -> str:
    strategies = sorted({r.strategy for r in runs})
    if requested is None:
        if "random" not in strategies:
            print("note: no random runs here, so no baseline comparison (--baseline NAME picks "
                  f"one of: {', '.join(strategies)})")
        return "random"
    if requested not in strategies:
        raise FishermaskError(f"--baseline {requested!r} is not a strategy of these runs; choose "
                              f"one of: {', '.join(strategies)}")
    return requested


def cmd_report(args) -> int:
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    if not 0 < args.min_gap < math.inf:
        raise FishermaskError(f"--min-gap {args.min_gap}: give a positive AUBC gap (e.g. 0.01)")
    uri = absolute_tracking_uri(preflight.tracking_uri(args.tracking_uri))  # fails fast if down
    _check_store(args, uri)
    out = _out_folder(args.out, create=False)
    client = MlflowClient(uri)
    parent, exp_id = find_parent(client, experiment=args.experiment, run_id=args.run)
    children = child_runs(client, exp_id, parent)
    finished = [r for r in children if r.info.status == "FINISHED"]
    skipped = len(children) - len(finished)
    if not finished:
        what = f"parent run {parent.info.run_id}" if parent else f"experiment {args.experiment}"
        raise FishermaskError(f"no finished runs under {what} at {uri} "
                              f"({len(children)} runs in all); nothing to report")
    if args.seeds is not None:
        seeds = {int(r.data.params.get("seed", 0)) for r in finished}
        finished = [r for r in finished if int(r.data.params.get("seed", 0)) in args.seeds]
        if not finished:
            raise FishermaskError(f"no finished run has seed {' or '.join(map(str, args.seeds))}; "
                                  f"the finished runs have seeds {sorted(seeds)}")
    runs, notes = split_configs([load_run(client, r) for r in finished])
    baseline = _baseline(args.baseline, runs)
    _out_folder(args.out)
    title = (parent.data.tags.get("sweep") or parent.data.tags.get("fishermask.sweep")
             or parent.info.run_name) if parent else args.experiment
    res = build_report(runs, out, title=title, metric=args.metric, baseline=baseline,
                       target=args.target, notes=notes, min_gap=args.min_gap)
    print("\n".join(line for line in res["files"]["summary"].read_text().splitlines()
                    if not line.startswith("![")))
    if skipped:
        print(f"note: {skipped} unfinished run(s) left out (resume the sweep to finish them)")
    for path in res["files"].values():
        print(f"wrote {path}")
    if not args.no_log:
        report_mlflow.log_report(client, parent, runs, res, metric=args.metric)
        if parent is not None:
            print(f"logged to parent run {parent.info.run_id} under report/ (open report.html "
                  f"there)")
    return 0
