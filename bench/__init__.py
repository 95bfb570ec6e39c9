"""Benchmarks: each prints one JSON object comparing against a named baseline.

Every bench measures through ``bench.measure.Meter`` (wall and CPU time, peak RSS)
and reads its data from ``tests.data`` (the generators tests share). Experiments,
which answer questions about the method rather than time code against a baseline,
are in ``bench.experiments``.
"""
