"""Unit tier: in-process, no services, no subprocesses; the whole tier runs in under a minute."""
