"""Benchmarks: each prints one JSON object comparing against a named baseline."""
