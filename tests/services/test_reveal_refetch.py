"""A re-ingest after a reveal: placeholder tokens are fetched again only when asked,
and a token whose new fetch fails keeps what was stored for it."""

from __future__ import annotations

import json
from collections import Counter

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.blocks import BlockSpec, ingest_block, load_rows
from tests.support.servers import Origin
from tests.support.stack import Services, noise_png

TOKENS = 30
REVEALED = 5  # ids 1..5 were revealed before the first ingest


def _serve(origin: Origin, tag: str, token: int, image: str) -> None:
    meta = {"name": f"#{token}", "image": origin.url + image}
    origin.serve(f"/{tag}/meta/{token}", json.dumps(meta), "application/json")


def test_refetch_placeholders_after_a_reveal(
    services: Services, settings: Settings, origin: Origin
) -> None:
    tag = f"reveal-{settings.s3_prefix.strip('/').replace('/', '-')}"
    placeholder = noise_png(8, 8, seed=1)
    origin.serve(f"/{tag}/hidden.png", placeholder, "image/png")
    art = {i: noise_png(8, 8, seed=100 + i) for i in range(1, TOKENS + 1)}
    for i in range(1, TOKENS + 1):
        origin.serve(f"/{tag}/art/{i}.png", art[i], "image/png")
        _serve(origin, tag, i, f"/{tag}/art/{i}.png" if i <= REVEALED else f"/{tag}/hidden.png")
    uris = [f"{origin.url}/{tag}/meta/{i}" for i in range(1, TOKENS + 1)]
    address = services.deploy_on_chain("Reveal", uris)
    spec = BlockSpec("Reveal", address, 1, TOKENS + 1)
    store = ObjectStore(settings)

    first = ingest_block(spec, settings)
    assert first.ok == TOKENS

    # The reveal: every token's metadata now names its own art; one image is gone.
    for i in range(1, TOKENS + 1):
        _serve(origin, tag, i, f"/{tag}/art/{i}.png")
    origin.serve(f"/{tag}/art/7.png", b"", "image/png", status=404)

    plain = ingest_block(spec, settings)
    assert (plain.skipped, plain.http_requests) == (TOKENS, 0)  # stored tokens stay

    again = ingest_block(
        BlockSpec("Reveal", address, 1, TOKENS + 1, refetch_placeholders=True), settings
    )
    hidden = TOKENS - REVEALED
    assert again.skipped == REVEALED
    assert again.http_requests == 2 * hidden  # metadata and image of each placeholder
    rows = load_rows(store, spec).rows
    assert all(r.status == "ok" for r in rows.values())
    shown = {i: store.read_blob(r.image_key or "") for i, r in rows.items()}
    assert [i for i in rows if i != 7 and shown[i] != art[i]] == []
    assert shown[7] == placeholder  # its new fetch failed: the stored row is kept
    assert Counter(r.sha256 for r in rows.values())[rows[7].sha256] == 1

    # One token showing the old image is no placeholder: nothing is fetched again.
    last = ingest_block(
        BlockSpec("Reveal", address, 1, TOKENS + 1, refetch_placeholders=True), settings
    )
    assert last.skipped == TOKENS
