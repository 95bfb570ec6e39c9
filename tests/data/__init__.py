"""Test data: the archives here, and the generators that tests and benchmarks share.

- ``synthetic``: token metadata at any scale in real shapes, from the HashLips layer
  names (tables tests, ``bench.tables``).
- ``composed``: collections of known retrieval difficulty composed from the HashLips
  layer art (``bench.experiments.cvi_validation``).
- ``composed_target``: one composed collection prepared as shards with official and
  derived masks, the masking experiment's second target.
- ``corpus``: the broad pretraining corpus (varied composed collections and real
  Loot, neither target), prepared once and cached (``bench.experiments.pretrain``).
- ``known_masks``: collections whose trait masks are known, and mean IoU against them
  (mask tests, ``bench.experiments.masks``).
- ``moonbird_shards``: real Moonbirds as WebDataset shards with masks, prepared once
  and cached (``bench.train``, ``bench.evaluate``, ``bench.cvi``, the masking experiment).
- ``token_rows``: tokens-file rows as build_block makes them (tables tests).
- ``hostile``: the hostile corpus, generated in code at run time, and its crash-proof
  runner (``tests/slow/test_hostile.py``, ``bench.hostile``).
- ``local_s3``: a private SeaweedFS to prepare them in, and boto3 signing as a local
  stack's identity without editing os.environ (``bench.ingest``).
"""
