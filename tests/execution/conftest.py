"""Fixtures of the executor tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_session(request):
    """The session's shared local Ray when tests/conftest.py provides one, else our own."""
    import ray

    own = False
    if not ray.is_initialized():
        try:
            request.getfixturevalue("ray_local")
        except pytest.FixtureLookupError:
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     object_store_memory=256 * 1024 ** 2)
            own = True
    yield
    if own:
        ray.shutdown()
