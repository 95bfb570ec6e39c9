"""SSRF: URLs that lead inward, refused before a packet leaves.

Every URL aims at the sentinel (127.0.0.1 and ::1 on one port), written in the
forms that have fooled address checks: other spellings of IPv4, IPv4 inside IPv6,
names that resolve inward, userinfo and scheme tricks, and redirects to any of
them from an allowed origin, on the first hop or later ones. Each must end in
blocked_address, bad_uri or unsupported_uri with the sentinel seeing 0 connections.
Private and reserved ranges the sentinel does not listen on must be refused too.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.data.hostile.case import Case, Env, refused
from tests.data.hostile.ingesting import (
    RowsCheck,
    fetch,
    fetch_uri,
    ingest_tokens,
    settings,
    untouched,
)
from tests.data.hostile.servers import redirect, response

REFUSED = refused("blocked_address", "bad_uri", "unsupported_uri")

# Hosts meaning 127.0.0.1 (or 0.0.0.0, which reaches it) written other ways.
LOOPBACK_V4 = (
    "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0x7f.1",
    "0177.0.0.1", "0177.1", "017700000001", "127.000.000.001", "127.0.0.01", "127.0.0.1.",
    "0x7F.0x0.0x0.0x1", "127.255.255.254", "127.127.127.127", "0", "0.0.0.0", "0x0", "00",
    "0.0.0.0.", "%31%32%37.0.0.1", "127%2e0%2e0%2e1", "\uff11\uff12\uff17.0.0.1",
    "127\u30020\u30020\u30021", "\u2460\u2461\u2466.\u24ea.\u24ea.\u2460", "127.0.0.1%00",
    "127.0.0.1%2500", "0x7f000001.", "4294967295", "0xffffffff",
)  # fmt: skip
LOOPBACK_V6 = (
    "[::1]", "[::]", "[0:0:0:0:0:0:0:1]", "[0000::1]", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "[::127.0.0.1]", "[64:ff9b::127.0.0.1]", "[64:ff9b::7f00:1]",
    "[64:ff9b:1::7f00:1]", "[2002:7f00:1::1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    "[fe80::1%25lo]", "[::1%25lo]", "[fe80::1]", "[::ffff:0.0.0.0]", "[::ffff:127.1]",
)  # fmt: skip
# Inward or reserved addresses nothing listens on: the kind must still be a refusal.
PRIVATE = (
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "192.0.0.170", "192.0.2.1", "198.18.0.1",
    "198.51.100.1", "203.0.113.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "0.0.0.1", "[fc00::1]", "[fd12:3456::1]", "[ff02::1]", "[fec0::1]",
    "[100::1]", "[2001:db8::1]", "[::ffff:169.254.169.254]", "[::ffff:10.0.0.1]",
    "[64:ff9b::a00:1]", "[2002:a00:1::1]", "0xa9.0xfe.0xa9.0xfe", "2852039166",
)  # fmt: skip
NAMES = ("localhost", "LOCALHOST", "localhost.", "LocalHost")


def _tricks(port: int) -> tuple[str, ...]:
    """Userinfo, scheme and port tricks around the sentinel."""
    p = port
    return (
        f"http://user:pass@127.0.0.1:{p}/", f"http://example.com@127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}@example.com/", f"http://127.0.0.1:{p}#@example.com/",
        f"http://127.0.0.1:{p}?@example.com/", f"http://example.com\\@127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}\\@example.com/", f"http://127.0.0.1\t:{p}/",
        f"http:/127.0.0.1:{p}/", f"http:127.0.0.1:{p}/", f"http:\\\\127.0.0.1:{p}\\",
        f"//127.0.0.1:{p}/", f"HTTP://127.0.0.1:{p}/", f"hTtP://127.0.0.1:{p}/",
        f"https://127.0.0.1:{p}/", "file:///etc/passwd", f"file://127.0.0.1:{p}/etc/passwd",
        f"gopher://127.0.0.1:{p}/_GET%20/", f"dict://127.0.0.1:{p}/info", f"ftp://127.0.0.1:{p}/",
        f"ws://127.0.0.1:{p}/", f"jar:http://127.0.0.1:{p}/x!/", "javascript:alert(1)",
        f"http://127.0.0.1:{p}:80/", "http://127.0.0.1:65536/", "http://127.0.0.1:0/",
        f"http://127.0.0.1:+{p}/", f"http://127.0.0.1 .example.com:{p}/",
        f"http://{'a.' * 130}127.0.0.1:{p}/", f"http://127.0.0.1%0d%0aHost:x:{p}/",
    )  # fmt: skip


def _host(form: str, port: int) -> str:
    return f"http://{form}:{port}/ssrf"


def _direct(url_of: Any) -> Any:
    def run(env: Env, data: Any) -> Any:
        with untouched(env):
            return fetch(url_of(env.sentinel.port))

    return run


def _via_redirect(url_of: Any, status: int = 302, hops: int = 1) -> Any:
    """The allowed origin redirects ``hops - 1`` times to itself, then inward."""

    def run(env: Env, data: Any) -> Any:
        path = f"/ssrf-{id(run)}"
        target = url_of(env.sentinel.port)
        for hop in range(hops - 1, -1, -1):
            next_url = target if hop == hops - 1 else f"{env.origin.url}{path}/{hop + 1}"
            env.origin.route(f"{path}/{hop}", redirect(next_url, status))
        with untouched(env):
            return fetch(f"{env.origin.url}{path}/0", allow=[env.origin.host_port])

    return run


def _relative_redirect(location: str) -> Any:
    """A Location the origin sends as written (scheme-relative, padded, odd)."""

    def run(env: Env, data: Any) -> Any:
        path = f"/ssrf-rel-{id(run)}"
        raw = location.replace("PORT", str(env.sentinel.port))
        env.origin.serve(path, response(302, b"", [("Location", raw)]))
        with untouched(env):
            return fetch(env.origin.url + path, allow=[env.origin.host_port])

    return run


def _token_uri(uri_of: Any, kinds: frozenset[str]) -> Any:
    """Through resolve_uri and download, with the origin as the only IPFS gateway."""

    def run(env: Env, data: Any) -> Any:
        s = settings([env.origin.host_port], gateways=[env.origin.url])
        with untouched(env):
            return fetch_uri(uri_of(env.sentinel.port), s)

    return run


CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def _batch(env: Env, data: bytes) -> Any:
    """Four tokens in one step: three images on the allowed origin, one inward."""
    images = {}
    for i in range(3):
        images[i] = env.origin.serve(f"/ssrf-batch/{i}.png", response(200, data))
    images[3] = f"http://127.0.0.1:{env.sentinel.port}/inward.png"
    uris = {i: 'data:application/json,{"image":"' + url + '"}' for i, url in images.items()}
    with untouched(env):
        return ingest_tokens(uris, settings([env.origin.host_port]))


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def cases() -> list[Case]:
    found: list[Case] = []
    for form in LOOPBACK_V4 + LOOPBACK_V6 + NAMES:
        url_of = (lambda f: lambda port: _host(f, port))(form)
        # A name may also fail to resolve ("localhost." on some systems): still no packet.
        kinds = REFUSED | {"connection"} if form in NAMES else REFUSED
        found.append(Case(f"direct {form}", _direct(url_of), kinds))
        found.append(Case(f"redirect to {form}", _via_redirect(url_of), kinds))
    for form in PRIVATE:
        url_of = (lambda f: lambda port: _host(f, port))(form)
        found.append(Case(f"private {form}", _direct(url_of), REFUSED))
    for n, _ in enumerate(_tricks(1)):
        url_of = (lambda k: lambda port: _tricks(port)[k])(n)
        found.append(Case(f"trick {_tricks(0)[n][:60]}", _direct(url_of), REFUSED))
    loop = lambda port: _host("127.0.0.1", port)  # noqa: E731
    for status in (301, 303, 307, 308):
        found.append(Case(f"redirect {status} inward", _via_redirect(loop, status), REFUSED))
    for hops in (2, 3, 5):
        found.append(Case(f"inward on hop {hops}", _via_redirect(loop, 302, hops), REFUSED))
    for location in (
        "//127.0.0.1:PORT/x", " http://127.0.0.1:PORT/x", "http://localhost:PORT/x",
        "http://[::1]:PORT/x", "http://0x7f.1:PORT/x", "file:///etc/passwd",
        "gopher://127.0.0.1:PORT/", "http://user@127.0.0.1:PORT/", "\\\\127.0.0.1:PORT\\x",
        "http:127.0.0.1:PORT/x",
    ):  # fmt: skip
        # Some are relative paths on the origin itself (its 404), none may reach inward.
        kinds = REFUSED | {"http_status"}
        found.append(Case(f"location {location}", _relative_redirect(location), kinds))
    gateway_answer = refused("http_status", "bad_car")  # the configured gateway has no such CID
    for name, uri_of in (
        ("token uri loopback", lambda p: f"http://127.0.0.1:{p}/meta.json"),
        ("token uri localhost", lambda p: f"http://localhost:{p}/meta.json"),
        ("token uri ipv6 mapped", lambda p: f"http://[::ffff:127.0.0.1]:{p}/m"),
    ):
        found.append(Case(name, _token_uri(uri_of, REFUSED), REFUSED))
    for name, uri_of in (
        ("subdomain gateway named inward", lambda p: f"http://{CID}.ipfs.localhost:{p}/m.json"),
        ("path gateway named inward", lambda p: f"http://127.0.0.1:{p}/ipfs/{CID}/m.json"),
    ):
        found.append(Case(name, _token_uri(uri_of, gateway_answer), gateway_answer))
    found.append(
        Case(
            "batch: one inward image among three good",
            _batch,
            make=_png,
            check=RowsCheck({0: "ok", 1: "ok", 2: "ok", 3: "blocked_address"}),
            time_s=3.0,
        )
    )
    return found
