"""The report's markdown sections that compare variants: FisherMask against each strategy, the
ablation of FisherMask's variants, the seeds the comparisons need, accuracy at each budget, the rare
classes' labels by round, the mask by tensor and the wall time per phase.  Each function returns a
list of lines (empty when the runs have nothing to show).  The comparisons' tables show the rows of
:func:`fishermask.reports.stats.family` (which pairs: ``*_pairs``); the words significant, above and
below are written only for a Holm-adjusted p under α."""

from __future__ import annotations

import math

import numpy as np

from fishermask.reports.data import (accuracy_table, ci95, diff_ci, mask_layers, phase_seconds,
                                     pool_class_counts)
from fishermask.reports.stats import ALPHA, POWER

FISHERMASK_FAMILY = ("fishermask", "fishermask_authors")


def pm(mean: float, spread: float, fmt: str = "{:.4f}") -> str:
    """``mean ± spread`` (``–`` for NaN; no spread when it is NaN)."""
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) + ("" if math.isnan(spread) else " ± " + fmt.replace("+", "").format(spread))


def std(xs) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan


def wins(scores_v: dict, scores_ref: dict) -> str:
    """``"k/n"``: seeds where ``scores_v`` is higher, of the seeds both have."""
    common = sorted(set(scores_v) & set(scores_ref))
    return f"{sum(scores_v[s] > scores_ref[s] for s in common)}/{len(common)}"


def paired(scores_v: dict, scores_ref: dict) -> tuple[dict, str]:
    """The difference to the reference over seeds (:func:`diff_ci`) and the :func:`wins`."""
    return diff_ci(scores_v, scores_ref), wins(scores_v, scores_ref)


def p_text(p: float) -> str:
    """A p value in a table: ``–`` without a test (NaN), ``<0.001``, else three decimals."""
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def diff_cell(row: dict) -> str:
    """A comparison's Δ ± 95 % CI half-width and its number of seeds."""
    return f"{pm(row['diff'], row['ci95'], '{:+.4f}')} (n={row['n']})"


def holm_note(family: list[dict]) -> list[str]:
    """The sentence under a table of comparisons: which are significant after Holm's adjustment
    within the table (Holm p < α), each pair once, ``a`` above or below ``b`` by the sign of Δ;
    no lines when the table holds no test."""
    tests = {frozenset((r["a"], r["b"])) for r in family if not math.isnan(r["p_holm"])}
    if not tests:
        return []
    named, hits = set(), []
    for r in family:
        pair = frozenset((r["a"], r["b"]))
        if r["p_holm"] < ALPHA and pair not in named:
            named.add(pair)
            holm = p_text(r["p_holm"])
            hits.append(f"`{r['a']}` {'above' if r['diff'] > 0 else 'below'} `{r['b']}` "
                        f"(Holm p {'< 0.001' if holm.startswith('<') else '= ' + holm})")
    head = (f"Holm's adjustment over the {len(tests)} test{'s' if len(tests) > 1 else ''} of "
            f"this table, α = {ALPHA:g}: ")
    return [head + ("significant: " + "; ".join(hits) if hits else "none is significant") + ".",
            ""]


def _fishermask_variants(groups) -> list[str]:
    return [v for v, rs in groups.items() if rs[0].strategy in FISHERMASK_FAMILY]


def versus_pairs(groups) -> list[tuple[str, str]]:
    """FisherMask (and the authors' variant) as the paper writes it against every other variant;
    variants with extra parameters (ablations) are left to :func:`ablation_pairs`."""
    fm = [v for v in _fishermask_variants(groups) if v == groups[v][0].strategy]
    if not fm or len(groups) < 2:
        return []
    return [(v, other) for v in fm for other in groups if other != v]


def versus(scores, metric: str, family: list[dict]) -> list[str]:
    """The table of :func:`versus_pairs`' comparisons (``family``): paired differences, wins,
    p and Holm p."""
    if not family:
        return []
    L = ["## FisherMask against each strategy", "",
         f"Δ = FisherMask's {metric.replace('_', ' ')} AUBC minus the other strategy's, ± 95 % "
         "CI over seeds (paired by seed); wins = seeds where FisherMask's AUBC is higher; p, Holm "
         "p: the t-test of Δ, and adjusted within this table.", "",
         "| FisherMask variant | against | Δ AUBC | wins | p | Holm p |",
         "|---|---|---|---|---|---|"]
    for r in family:
        L.append(f"| {r['a']} | {r['b']} | {diff_cell(r)} | "
                 f"{wins(scores[r['a']][metric], scores[r['b']][metric])} | {p_text(r['p'])} | "
                 f"{p_text(r['p_holm'])} |")
    return L + [""] + holm_note(family)


def rare_labels(groups) -> list[str]:
    """How fast each variant finds the rare classes (those with fewer pool images than the
    largest): their labels after each round, mean over seeds. Empty for a balanced pool, for
    runs of different pools or without per-round class counts."""
    runs = [r for rs in groups.values() for r in rs]
    pools = {tuple(pool_class_counts(r.config)) for r in runs}
    if len(pools) != 1 or not all(r.labels_by_step for r in runs):
        return []
    pool = list(pools.pop())
    rare = [c for c, n in enumerate(pool) if n < max(pool, default=0)]
    steps = sorted(set.intersection(*(set(r.labels_by_step) for r in runs)))
    if not rare or not steps or any(len(r.labels_by_step[steps[0]]) < len(pool) for r in runs):
        return []
    names = (f"{rare[0]}-{rare[-1]}" if len(rare) > 2 and rare == list(range(rare[0], rare[-1] + 1))
             else ", ".join(str(c) for c in rare))
    L = ["## Labels of the rare classes by round", "",
         f"Labels of the classes with fewer pool images than the largest (classes {names}: "
         f"{sum(pool[c] for c in rare)} pool images) after each round, mean over seeds.", "",
         "| variant | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for v, rs in groups.items():
        L.append(f"| {v} | " + " | ".join(
            f"{np.mean([sum(r.labels_by_step[s][c] for c in rare) for r in rs]):.1f}"
            for s in steps) + " |")
    return L + [""]


def _flag(value, default: str) -> str:
    return str(value if value is not None else default).lower()


def ablation_pairs(groups, baseline: str = "random") -> list[tuple[str, str]]:
    """FisherMask's variants against ``fishermask`` as the paper writes it and against the
    baseline (the first variant of that strategy)."""
    fam = _fishermask_variants(groups)
    if "fishermask" not in groups or len(fam) < 2:
        return []
    base = [v for v, rs in groups.items() if rs[0].strategy == baseline][:1]
    return [(v, ref) for v in fam for ref in dict.fromkeys(["fishermask", *base]) if ref != v]


def ablation(groups, scores, metric: str, family: list[dict],
             baseline: str = "random") -> list[str]:
    """FisherMask's variants side by side (√p scaling of the embeddings, which pool points give the
    mask's Fisher diagonal), each against ``fishermask`` as the paper writes it, paired by seed:
    the table of :func:`ablation_pairs`' comparisons (``family``)."""
    if not family:
        return []
    by = {(r["a"], r["b"]): r for r in family}
    base = next((v for v, rs in groups.items() if rs[0].strategy == baseline), None)
    L = ["## FisherMask ablation", "",
         "What each FisherMask variant computes, and its AUBC against `fishermask` (the paper's "
         "formula: √p scaling, mask from random pool points): AUBC ± 95 % CI of the mean, Δ ± "
         "95 % CI paired by seed; wins = seeds where the variant's AUBC is higher; p, Holm p: "
         "the t-test of each Δ, and adjusted within this table (both Δ columns).", "",
         "| variant | √p scaling | mask pool points | AUBC | Δ vs fishermask | wins | p | Holm p "
         f"| Δ vs {baseline} | p | Holm p |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in _fishermask_variants(groups):
        cfg = groups[v][0].config
        authors = groups[v][0].strategy == "fishermask_authors"
        sqrt_p = _flag(cfg.get("strategy.prob_scaling"), "false" if authors else "true")
        subset = _flag(cfg.get("strategy.mask_subset"), "first" if authors else "random")
        n = cfg.get("strategy.mask_samples", "1024")
        vals = list(scores[v][metric].values())
        vs_fm, vs_base = by.get((v, "fishermask")), by.get((v, base))
        fm_cells = (f"{diff_cell(vs_fm)} | {wins(scores[v][metric], scores['fishermask'][metric])}"
                    f" | {p_text(vs_fm['p'])} | {p_text(vs_fm['p_holm'])}" if vs_fm
                    else "– | – | – | –")
        base_cells = (f"{diff_cell(vs_base)} | {p_text(vs_base['p'])} | "
                      f"{p_text(vs_base['p_holm'])}" if vs_base else "– | – | –")
        L.append(f"| {v} | {'yes' if sqrt_p == 'true' else 'no'} | {subset} {n} | "
                 f"{pm(float(np.mean(vals)), ci95(vals))} | {fm_cells} | {base_cells} |")
    return L + [""] + holm_note(family)


def seeds_needed(comparisons: list[dict], min_gap: float) -> list[str]:
    """Per comparison (a pair shown in several tables or both ways, once): the paired seeds for
    :data:`~fishermask.reports.stats.POWER` at the observed Δ and at ``min_gap``, both with the
    observed sd of the paired differences (:func:`fishermask.reports.stats.seeds_for_power`);
    no section when no comparison has a paired sd to plan with."""
    if all(math.isnan(r["sd"]) for r in comparisons):
        return []
    L = ["## Seeds needed", "",
         f"Paired seeds for {POWER * 100:.0f} % power of the two-sided paired t-test at "
         f"α = {ALPHA:g} (noncentral t), with the observed sd of the paired AUBC differences: "
         f"at the observed Δ and at a gap of {min_gap:g} AUBC (`--min-gap`). – = nothing to plan "
         "from (a zero Δ or sd, fewer than two paired seeds, or seeds that do not pair). The "
         "numbers are per test: after Holm's adjustment the first test of a table of m is held "
         "to α/m, so a table needs more.", "",
         f"| comparison | seeds now | Δ AUBC | sd of Δ | seeds for Δ | seeds for {min_gap:g} |",
         "|---|---|---|---|---|---|"]
    shown = set()
    for r in comparisons:
        key = (frozenset((r["a"], r["b"])), r["metric"])
        if key in shown:
            continue
        shown.add(key)
        now = f"{r['n']}" + ("" if r["paired"] else " (unpaired)")
        sd = "–" if math.isnan(r["sd"]) else f"{r['sd']:.4f}"
        L.append(f"| {r['a']} − {r['b']} | {now} | {r['diff']:+.4f} | {sd} | "
                 f"{_count(r['seeds_for_power'])} | {_count(r['seeds_for_min_gap'])} |")
    return L + [""]


def _count(n) -> str:
    return "–" if n is None else f"{n:,}"


def budget(runs, metric: str) -> list[str]:
    """Mean ± std accuracy over seeds at every label count (the curves as numbers)."""
    steps, table = accuracy_table(runs, metric)
    if not steps:
        return []
    L = [f"## {metric.replace('_', ' ').capitalize()} at each budget", "",
         "Mean ± std over seeds (test set), one column per number of labels.", "",
         "| variant | " + " | ".join(str(t) for t in steps) + " |",
         "|---|" + "---|" * len(steps)]
    for v, cells in table.items():
        L.append(f"| {v} | " + " | ".join(pm(m, d, "{:.3f}") for m, d in cells) + " |")
    return L + [""]


def mask(groups) -> list[str]:
    """The mask profile: the five most selected tensors per variant, the figures, and every
    tensor's fraction in network order (the paper's Fig. 2 has ResNet-18's 61)."""
    have = {v: mask_layers(rs) for v, rs in groups.items()}
    have = {v: t for v, t in have.items() if t[0]}
    if not have:
        return []
    L = ["## FisherMask mask profile", "",
         "Fraction of each parameter tensor selected into the mask, mean over seeds and "
         "rounds (the paper's Fig. 2); the five most selected tensors:", "",
         "| variant | tensors | top tensors (fraction in mask) |", "|---|---|---|"]
    for v, (names, mean, _) in have.items():
        top = np.argsort(-mean)[:5]
        L.append(f"| {v} | {len(names)} | "
                 + ", ".join(f"{names[i]} ({mean[i]:.3f})" for i in top) + " |")
    L += ["", "![mask by tensor](mask_by_tensor.png)", "", "![mask profile](mask_profile.png)",
          "", "Every tensor in network order: the fraction of it in the mask and, in brackets, "
          "the number of its weights in the mask, both mean over seeds and rounds (0 = none in "
          "any round):",
          "", "| # | tensor | size | " + " | ".join(have) + " |", "|---|---|---|" + "---|" * len(have)]
    first = next(iter(groups[v] for v in have))
    sizes = {p["name"]: p.get("size", "") for r in first for prof in r.mask_profiles[:1]
             for p in prof}
    names = next(iter(have.values()))[0]
    for i, name in enumerate(names):
        cells = []
        for v, (vn, mean, _) in have.items():
            cells.append(_fraction(mean[vn.index(name)], sizes.get(name)) if name in vn
                         else "–")
        L.append(f"| {i + 1} | {name} | {sizes.get(name, '')} | " + " | ".join(cells) + " |")
    return L + [""]


def _fraction(f: float, size) -> str:
    """A mean mask fraction and the mean number of weights it is, so that sums over tensors
    can be read off; an exact 0 (no weight in any round: fractions are non-negative) is told
    apart from a fraction too small for 4 decimals."""
    if f == 0:
        return "0"
    text = "<0.0001" if f < 5e-5 else f"{f:.4f}"
    return f"{text} ({f * size:.2f})" if isinstance(size, (int, float)) else text


def training(groups) -> list[str]:
    """Training epochs per round and how often the epoch cap (``train.max_epochs``) ended a
    training before the target accuracy: the cap's effect, stated."""
    have = {v: rs for v, rs in groups.items() if any(r.epochs for r in rs)}
    if not have:
        return []
    L = ["## Training", "",
         "Epochs per training (one per round, the initial one included), over all seeds; at the "
         "cap = trainings that stopped at `train.max_epochs` (before the target accuracy, unless "
         "they reached it in that very epoch).", "",
         "| variant | trainings | epochs (mean) | epochs (max) | cap | at the cap |",
         "|---|---|---|---|---|---|"]
    for v, rs in have.items():
        ep = [e for r in rs for e in r.epochs]
        caps = {None if r.config.get("train.epochs") else r.config.get("train.max_epochs")
                for r in rs}  # fixed epochs: no cap
        cap = int(caps.pop()) if len(caps) == 1 and None not in caps else None
        at = sum(e >= cap for e in ep) if cap else 0
        L.append(f"| {v} | {len(ep)} | {np.mean(ep):.1f} | {max(ep)} | {cap or '–'} | "
                 f"{at} ({at / len(ep):.0%}) |")
    return L + [""]


def wall_time(runs) -> list[str]:
    """Wall time per phase, mean over seeds of a run's total (all rounds)."""
    names, table = phase_seconds(runs)
    if not names:
        return []
    L = ["## Wall time per phase", "",
         "Seconds per run (all rounds summed), mean over seeds; – = not a phase of that strategy. "
         "`query` is the whole selection; "
         "the `query:` columns are its parts (mask = the Fisher diagonal and top-k, gradients = "
         "the pool's embeddings V_x (masked gradients for FisherMask, the last layer's closed "
         "form for BAIT), fisher = F, greedy = the selection itself). `run (wall)` is the whole "
         "run from start to end, evaluation and logging included (across a resume: the span).",
         "",
         "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for v, row in table.items():
        L.append(f"| {v} | " + " | ".join("–" if math.isnan(row[k]) else f"{row[k]:.1f}"
                                          for k in names) + " |")
    return L + [""]
