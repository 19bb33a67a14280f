"""The p values of a committed report's comparisons, recomputed from its tables alone.

A report's ``summary.md`` gives each paired comparison as a cell ``Δ ± h (n=N)`` (or
``(paired, n=N)``): the mean difference over N paired seeds and the half-width of its 95 %
t-interval.  That is enough to recover the paired t-test without the runs:

    se = h / t_{0.975, N−1},   t = Δ / se,   p = 2·P(T_{N−1} > |t|),   sd = se·√N

(sd: the standard deviation of the paired differences).  Within each table (one family, as
``fishermask report`` forms them: the Δ-vs-baseline column, the "FisherMask against each
strategy" table, the ablation table with both of its Δ columns, a comparison table of
evaluations) the p values are Holm-adjusted with :func:`fishermask.reports.stats.holm`; a pair
shown both ways (a − b and b − a in the same column) is one test.  The seeds for 80 % power at
α = 0.05 are :func:`fishermask.reports.stats.seeds_for_power` at the observed Δ and sd, and at
``--gap`` when given.

The tables round Δ and h to four decimals, so p is that of the rounded numbers (close to, not
always equal to, the p of the runs).  Cells marked ``unpaired`` (Welch's interval: its degrees of
freedom are not in the table) get no test.

    python scripts/holm_from_summary.py docs/results/resnet_setting1_low/summary.md [--gap 0.005]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere: the package of this checkout
    sys.path.insert(0, str(ROOT))

from fishermask.reports.stats import ALPHA, holm, seeds_for_power  # noqa: E402

CELL = re.compile(r"^([+\-−]?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?) \(((?:un)?paired, )?n=(\d+)\)$")
VS = re.compile(r"Δ vs (\S+)")


def tables(text: str) -> list[dict]:
    """The markdown tables of ``text``: ``title`` (the last heading or bold lead above it),
    ``header`` and ``rows`` (lists of cell strings)."""
    out, title, block = [], "", []

    def close():
        if len(block) >= 2:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block]
            out.append({"title": title, "header": cells[0], "rows": cells[2:]})
        block.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        close()
        if line.startswith("#"):
            title = line.lstrip("#").strip()
    close()
    return out


def t_from_cell(diff: float, half: float, n: int) -> dict:
    """The paired t-test behind ``diff ± half`` over ``n`` paired seeds: ``p`` and ``sd`` (NaN
    for n < 2; for half = 0, p = 0 for a nonzero diff and 1 for none, as the report has it)."""
    from scipy import stats

    if n < 2:
        return {"p": math.nan, "sd": math.nan}
    se = half / stats.t.ppf(0.975, n - 1)
    if se == 0:
        return {"p": 0.0 if diff else 1.0, "sd": 0.0}
    return {"p": float(2 * stats.t.sf(abs(diff / se), n - 1)), "sd": se * math.sqrt(n)}


def comparisons(table: dict, gap: float | None = None) -> list[dict]:
    """Every ``Δ ± h (n=N)`` cell of ``table`` as a comparison ``a`` − ``b`` (``a``: the row's
    first cell; ``b``: the variant a ``Δ vs X`` column names, else the row's second cell), with
    its p, Holm p within the table and the seeds for 80 % power."""
    rows = []
    for cells in table["rows"]:
        for col, (head, cell) in enumerate(zip(table["header"], cells)):
            m = CELL.match(cell)
            if not m or col == 0:
                continue
            vs = VS.search(head)
            b = vs.group(1) if vs else cells[1]
            diff = float(m.group(1).replace("−", "-"))
            half, n = float(m.group(2)), int(m.group(4))
            t = (t_from_cell(diff, half, n) if m.group(3) != "unpaired, "
                 else {"p": math.nan, "sd": math.nan})
            rows.append({"a": cells[0], "b": b, "column": head, "diff": diff, "ci95": half, "n": n,
                         **t, "seeds_for_power": _seeds(diff, t["sd"]),
                         "seeds_for_gap": _seeds(gap, t["sd"]) if gap else None})
    keys = [(frozenset((r["a"], r["b"])), r["column"]) for r in rows]
    tests = dict(zip(keys, (r["p"] for r in rows)))  # a − b and b − a: one test
    adjusted = dict(zip(tests, holm(list(tests.values()))))
    for key, r in zip(keys, rows):
        r["p_holm"] = adjusted[key]
    return rows


def _seeds(diff: float, sd: float):
    return None if math.isnan(sd) else seeds_for_power(abs(diff), sd)


def _p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.4f}"


def render(path: Path, gap: float | None = None) -> str:
    """The comparisons of every table of ``path`` that has some, one markdown table each."""
    L = [f"# {path}", ""]
    for table in tables(path.read_text()):
        rows = comparisons(table, gap)
        if not rows:
            continue
        m = len({(frozenset((r["a"], r["b"])), r["column"]) for r in rows
                 if not math.isnan(r["p"])})
        L += [f"## {table['title']} ({m} tests, Holm within this table)", "",
              "| a | b | column | Δ ± 95 % CI (n) | p | Holm p | Holm p < 0.05 | seeds for 80 % "
              "power at Δ" + (f" | at {gap:g}" if gap else "") + " |",
              "|---|---|---|---|---|---|---|---|" + ("---|" if gap else "")]
        for r in rows:
            sig = "–" if math.isnan(r["p_holm"]) else ("yes" if r["p_holm"] < ALPHA else "no")
            L.append(f"| {r['a']} | {r['b']} | {r['column']} | {r['diff']:+.4f} ± "
                     f"{r['ci95']:.4f} ({r['n']}) | {_p(r['p'])} | {_p(r['p_holm'])} | {sig} | "
                     f"{r['seeds_for_power'] or '–'} |"
                     + (f" {r['seeds_for_gap'] or '–'} |" if gap else ""))
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summaries", nargs="+", type=Path, help="a report's summary.md")
    ap.add_argument("--gap", type=float, default=None,
                    help="also the seeds for 80 %% power at this gap (AUBC), with each "
                         "comparison's sd")
    args = ap.parse_args(argv)
    print("\n".join(render(p, args.gap) for p in args.summaries))


if __name__ == "__main__":
    main()
