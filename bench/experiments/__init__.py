"""Experiments: questions about the method, answered on real or composed data; each prints JSON.

Unlike the benchmarks beside this package, these compare no code against a named
baseline: they measure whether an idea works.

- ``masks``: how well derived trait masks match the known ones (IoU), and their cost.
- ``masking``: does dynamic masking help retrieval? Plain against masked training arms.
- ``cvi_validation``: does the CVI rank retrieval difficulty on collections of known
  difficulty, through the deployments?
"""
