"""Ray Tune's resume hint is replaced by the fishermask command that resumes the sweep."""

from __future__ import annotations

import logging

from fishermask.sweeps.hints import ResumeHint


def test_ray_resume_hint_becomes_the_fishermask_command():
    record = logging.LogRecord("ray.tune.tune", logging.WARNING, __file__, 1,
                               'Experiment has been interrupted, but the most recent state was '
                               'saved.\nResume experiment with: Tuner.restore(path="%s", '
                               'trainable=...)', ("/x",), None)
    assert ResumeHint("fishermask sweep s.yaml --resume").filter(record)
    text = record.getMessage()
    assert "Tuner.restore" not in text and text.endswith("fishermask sweep s.yaml --resume")
