"""Slow tier: no services, but real archives, real image work, embedded kubo or subprocesses."""
