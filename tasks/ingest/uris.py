"""Turn a token URI (or a metadata ``image`` value) into one place to fetch from.

Every URI comes from a token's contract or metadata, so it is attacker-controlled:
parsing is strict about shape, cheap on size, and never echoes large input back.
IPFS content is returned as an ``IpfsLocation`` whatever gateway the URI named, so
the configured gateways (and CID verification) are used instead of the author's.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote, unquote, unquote_to_bytes

from yarl import URL

from tasks.core.errors import ItemError
from tasks.core.settings import Settings


@dataclass(frozen=True)
class HttpLocation:
    """A plain http(s) URL; the fetcher still checks its address on every hop."""

    url: str


@dataclass(frozen=True)
class IpfsLocation:
    """Content under a CID; ``path`` is percent-encoded, without a leading slash."""

    cid: str
    path: str


@dataclass(frozen=True)
class DataLocation:
    """Bytes carried inline by a ``data:`` URI; ``mime`` is ``type/subtype`` only."""

    data: bytes
    mime: str


Location: TypeAlias = HttpLocation | IpfsLocation | DataLocation

# Longest non-data URI accepted; real ones are far shorter.
MAX_URI_CHARS = 8192
# Longest data: header (media type and parameters, before the comma).
MAX_DATA_HEADER_CHARS = 1024

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Cheap CID shapes: v0 (base58btc "Qm..."), v1 in base32, base36, base58btc, base16.
_CID = re.compile(
    r"Qm[1-9A-HJ-NP-Za-km-z]{44}"
    r"|b[a-z2-7]{50,200}|B[A-Z2-7]{50,200}"
    r"|k[0-9a-z]{45,200}|z[1-9A-HJ-NP-Za-km-z]{45,200}|f[0-9a-f]{60,200}"
)
_AR_TXID = re.compile(r"[A-Za-z0-9_-]{43}")
_MIME = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_ID_PLACEHOLDER = re.compile(r"\{id\}|%7[bB]id%7[dD]")


def resolve_uri(
    uri: str, token_id: int, settings: Settings, *, max_data_bytes: int | None = None
) -> Location:
    """Parse ``uri`` into a Location, or raise ItemError bad_uri/unsupported_uri/too_large.

    ``max_data_bytes`` caps inline ``data:`` payloads; it defaults to the (smaller)
    metadata cap, so callers resolving an image value pass ``settings.max_image_bytes``.
    """
    text = uri.strip()
    if not text:
        raise ItemError("bad_uri", "empty URI")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, which JSON strings may carry
            raise ItemError("bad_uri", "URI is not valid Unicode") from None
    scheme_match = _SCHEME.match(text)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    cap = settings.max_metadata_bytes if max_data_bytes is None else max_data_bytes
    if scheme == "data":
        return _parse_data(text[5:], cap)
    if text.startswith("{"):
        # Some contracts return the metadata JSON itself instead of a URI to it.
        data = text.encode("utf-8", "surrogatepass")
        _check_size(len(data), cap)
        return DataLocation(data=data, mime="application/json")
    if len(text) > MAX_URI_CHARS:
        raise ItemError("bad_uri", f"URI too long ({len(text)} chars): {_snip(text)}")
    if _CONTROL.search(text):
        raise ItemError("bad_uri", f"control character in URI: {_snip(text)}")
    text = _substitute_id(text, token_id)
    rest = text[len(scheme) + 1 :]
    if scheme == "ipfs":
        return _ipfs_location(rest.lstrip("/").removeprefix("ipfs/"), text)
    if scheme == "ar":
        return _arweave_location(rest.lstrip("/"), text, settings.arweave_gateway)
    if scheme in ("http", "https"):
        return _http_location(text)
    if scheme:
        raise ItemError("unsupported_uri", f"scheme {scheme!r} is not fetched: {_snip(text)}")
    if text.startswith("/ipfs/"):
        return _ipfs_location(text[len("/ipfs/") :], text)
    if _CID.fullmatch(text.split("/", 1)[0]):
        return _ipfs_location(text, text)
    raise ItemError("bad_uri", f"not a URI or CID: {_snip(text)}")


def _substitute_id(text: str, token_id: int) -> str:
    """Apply ERC-1155's ``{id}`` rule: 64 lowercase hex digits, zero-padded."""
    if not 0 <= token_id < 2**256:
        raise ValueError(f"token id out of uint256 range: {token_id}")
    return _ID_PLACEHOLDER.sub(f"{token_id:064x}", text)


def _ipfs_location(cid_and_path: str, original: str) -> IpfsLocation:
    """Split ``CID[/path][?query][#fragment]``; query and fragment mean nothing to IPFS."""
    cid, _, path = _drop_query(cid_and_path).partition("/")
    if not _CID.fullmatch(cid):
        raise ItemError("bad_uri", f"malformed CID in {_snip(original)}")
    return IpfsLocation(cid=cid, path=_clean_path(path, original))


def _arweave_location(txid_and_path: str, original: str, gateway: str) -> HttpLocation:
    """Map ``ar://TXID[/path]`` onto the configured Arweave gateway."""
    txid, _, path = _drop_query(txid_and_path).partition("/")
    if not _AR_TXID.fullmatch(txid):
        raise ItemError("bad_uri", f"malformed Arweave transaction id in {_snip(original)}")
    clean = _clean_path(path, original)
    suffix = f"/{clean}" if clean else ""
    return HttpLocation(f"{gateway.rstrip('/')}/{txid}{suffix}")


def _http_location(text: str) -> Location:
    """Check an http(s) URL's shape; reroute IPFS gateway URLs to IpfsLocation."""
    try:
        url = URL(text)
    except ValueError as exc:
        raise ItemError("bad_uri", f"malformed URL ({exc}): {_snip(text)}") from None
    host = url.raw_host
    if not host:
        raise ItemError("bad_uri", f"URL has no host: {_snip(text)}")
    if url.raw_user is not None or url.raw_password is not None:
        raise ItemError("bad_uri", f"credentials in URL: {_snip(text)}")
    labels = host.split(".")
    if len(labels) > 2 and labels[1] == "ipfs" and _CID.fullmatch(labels[0]):
        return IpfsLocation(cid=labels[0], path=_clean_path(url.raw_path, text))
    segments = url.raw_path.split("/")
    if len(segments) > 2 and segments[1] == "ipfs" and _CID.fullmatch(segments[2]):
        return IpfsLocation(cid=segments[2], path=_clean_path("/".join(segments[3:]), text))
    return HttpLocation(str(url.with_fragment(None)))


def _drop_query(text: str) -> str:
    """Cut at the first ``?`` or ``#``; escaped ones inside names stay as %3F/%23."""
    return re.split(r"[?#]", text, maxsplit=1)[0]


def _clean_path(path: str, original: str) -> str:
    """Decode each segment, refuse ``..`` and encoded slashes, re-quote it safely."""
    clean: list[str] = []
    for segment in path.split("/"):
        raw = unquote_to_bytes(segment)
        if raw in (b"", b"."):
            continue
        if raw == b".." or b"/" in raw or b"\\" in raw or b"\x00" in raw:
            raise ItemError("bad_uri", f"unsafe path segment in {_snip(original)}")
        clean.append(quote(raw, safe=""))
    return "/".join(clean)


def _parse_data(rest: str, cap: int) -> DataLocation:
    """Decode an RFC 2397 body, refusing before decoding when it must exceed ``cap``."""
    comma_at = rest.find(",", 0, MAX_DATA_HEADER_CHARS + 1)
    if comma_at < 0:
        raise ItemError("bad_uri", f"data: URI without a comma in its header: {_snip(rest)}")
    header, payload = rest[:comma_at], rest[comma_at + 1 :]
    params = [p.strip().lower() for p in header.split(";")]
    is_base64 = params[-1] == "base64"
    mime = params[0] if _MIME.fullmatch(params[0]) else "text/plain"
    if is_base64:
        data = _decode_base64(payload, cap)
    else:
        # Lower bound of the decoded size: every "%XX" turns 3 chars into 1 byte.
        _check_size(len(payload) - 2 * payload.count("%"), cap)
        data = unquote_to_bytes(payload)
    _check_size(len(data), cap)
    return DataLocation(data=data, mime=mime)


def _decode_base64(payload: str, cap: int) -> bytes:
    """Base64 with whitespace and missing padding tolerated, checked before decoding."""
    whitespace = sum(payload.count(c) for c in " \t\r\n\f\v")
    _check_size((len(payload) - whitespace - 2 * payload.count("%")) * 3 // 4 - 2, cap)
    text = "".join((unquote(payload) if "%" in payload else payload).split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise ItemError("bad_uri", f"invalid base64 in data: URI: {_snip(text)}") from None


def _check_size(size: int, cap: int) -> None:
    """Refuse a data: payload over its cap."""
    if size > cap:
        raise ItemError("too_large", f"data: URI payload of {size} bytes exceeds {cap}")


def _snip(text: str, limit: int = 80) -> str:
    """A short, quoted excerpt of attacker input for error messages."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"
