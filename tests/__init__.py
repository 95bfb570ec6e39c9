"""The project's tests, in tiers by folder (see tests/README.md).

A package, so every test module, helper and data generator is imported by one
name (``tests.unit.test_fetch``, ``tests.support.stack``, ``tests.data.synthetic``)
from the repository root, by pytest and by ``python -m bench.X`` alike.
"""
