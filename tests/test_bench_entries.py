"""The benchmark entries' ratio: above 1 always means we are better (throughput ours/peer, time peer/ours)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _common():
    path = Path(__file__).parent.parent / "bench" / "common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratio_is_oriented_so_that_higher_is_better_for_us():
    common = _common()
    faster = common.entry("x/seconds", 2.0, 5.0, "s", {}, higher_is_better=False)
    assert faster["ratio"] == 2.5 and "lower is better; ratio peer/ours" in faster["unit"]
    more = common.entry("x/per_second", 300.0, 100.0, "pairs/s", {"k": 1}, higher_is_better=True)
    assert more["ratio"] == 3.0 and more["config"] == {"k": 1}
    assert set(more) == {"name", "ours", "peer", "ratio", "unit", "config"}  # DESIGN.md section 9


def test_ours_and_the_peer_alternate():
    common = _common()
    calls = []
    ours, peer = common.alternate(lambda: calls.append("ours") or len(calls), lambda: calls.append("peer") or 0, 3)
    assert calls == ["ours", "peer"] * 3 and ours == [1, 3, 5] and common.median([3.0, 1.0, 2.0]) == pytest.approx(2.0)
