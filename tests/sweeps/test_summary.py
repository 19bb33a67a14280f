"""The end-of-sweep summary's "at a time" (what ran at once) and the progress line."""

from __future__ import annotations

from types import SimpleNamespace

from fishermask.sweeps.grid import load_sweep
from fishermask.sweeps.progress import progress_line
from fishermask.sweeps.summary import most_at_once, summarize


def test_most_at_once_counts_overlaps_and_not_back_to_back_trials():
    assert most_at_once([]) == 0
    assert most_at_once([(0, 10), (10, 20), (20, 30)]) == 1  # one slot, trial after trial
    assert most_at_once([(0, 10), (5, 15), (6, 7), (12, 20)]) == 3
    assert most_at_once([(0, 10), (0, 10)]) == 2


def test_the_summary_counts_what_ran_not_the_clusters_size(tmp_path, make_tiny_sweep):
    spec = load_sweep(make_tiny_sweep(tmp_path)).trials[0].to_dict()  # 1 CPU a trial
    spans = [(0.0, 10.0), (10.0, 20.0), (0.0, 20.0), (20.0, 30.0)]  # 2 at most, on 8 CPUs
    results = [SimpleNamespace(config={"trial": spec}, path=f"trial_k{i}", error=None,
                               metrics={"done": True, "trial_seconds": 10.0, "loop_seconds": 8.0,
                                        "mlflow_seconds": 1.0, "tune_seconds": 0.5,
                                        "trial_start": a, "trial_end": b})
               for i, (a, b) in enumerate(spans)]
    text, ok = summarize(results, 30.0, {"FINISHED": 4}, {"CPU": 8.0}, {})
    assert ok and "for 4 trials (2 at a time)" in text


def test_the_progress_line_says_what_runs():
    def trial(status, label, rnd=None):
        return SimpleNamespace(status=status, config={"trial": {"label": label}},
                               last_result={"round": rnd} if rnd is not None else {})

    trials = [trial("TERMINATED", "random seed=0", 5), trial("RUNNING", "bait seed=0", 2),
              trial("RUNNING", "margin seed=1"), trial("PENDING", "kcenter seed=0"),
              trial("ERROR", "badge seed=0", 1)]
    assert progress_line(trials) == ("1/5 done, 2 running (bait seed=0 (round 2), margin "
                                     "seed=1), 1 pending, 1 failed")
