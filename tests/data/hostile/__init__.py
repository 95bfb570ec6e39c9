"""A hostile corpus: inputs a token's owner could choose, generated in code at run time.

Each category module (``ssrf``, ``http_behaviour``, ``images``, ``svg``, ``metadata``,
``rpc``, ``car``, ``tables``) lists ``Case`` objects (``case``): the input, built
when the case runs, and the outcome that holds (an error kind that refuses it, or
a result that passes a check), within a time and memory bound. ``runner`` runs
categories in child processes (``child``), so a crash or a hang costs one case,
not the run; ``servers`` are the hostile HTTP and JSON-RPC servers on loopback.
``catalog`` names the categories; ``bench.hostile`` runs them all.
"""
