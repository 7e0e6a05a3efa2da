"""Benchmarks against peers, run by ``make bench`` (``python -m bench``); results in bench/results.json."""
