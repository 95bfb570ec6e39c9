"""Prefect flows: orchestration only; the work itself lives in ``tasks``."""
