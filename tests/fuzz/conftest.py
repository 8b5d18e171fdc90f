"""Fuzzing with hypothesis: how many cases each fuzz test runs.

A plain run (CI) draws the small counts; ``ARCHETYPE_FUZZ=full`` draws the full counts, 10,000
cases across the fuzz tests together.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FULL = os.environ.get("ARCHETYPE_FUZZ") == "full"

settings.register_profile(
    "archetype-fuzz",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    derandomize=not FULL,  # CI draws the same cases every run; the full run explores
    database=None,
)
