"""fishermask.machine: the CPU facts the kernels' BLAS choice and the study reports read."""

from __future__ import annotations

import sys

from fishermask import machine


def test_cpu_facts_agree_with_proc_cpuinfo():
    model, vendor = machine.cpu_model(), machine.cpu_field("vendor_id")
    assert isinstance(model, str) and model
    if sys.platform.startswith("linux"):
        text = open("/proc/cpuinfo").read()
        assert f": {model}" in text and vendor is not None and f": {vendor}" in text
    assert machine.intel_cpu() == (vendor == "GenuineIntel")
    assert machine.cpu_field("no such field") is None
