"""Helpers the tests share: the services' fixtures' types, HTTP servers, Moonbirds shards."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root
