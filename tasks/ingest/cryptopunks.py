"""CryptoPunks: a collection whose market contract has no tokenURI.

The punks' images and traits live in a separate on-chain data contract
(CryptoPunksData: ``punkImageSvg`` and ``punkAttributes`` of a uint16 index). The plan
maps the market address to that contract; each block then reads both strings per
punk and builds the token's metadata as a ``data:application/json;base64`` URI, which
the ordinary token pipeline resolves, checks (the SVG through check_svg) and stores.

Everything the data contract returns is attacker-controlled (a node of another chain
may hold anything at these addresses): strings are size-capped, attribute entries are
cut to printable text of bounded count and length, and a reply that is not an SVG
data: URI fails that token with an ItemError, never the block.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from tasks.core.content import is_svg
from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader, encode_call, string_reply
from tasks.ingest.token_source import TokenSource

log = logging.getLogger(__name__)

MAX_ID = 0xFFFF  # the data contract takes a uint16 index
MAX_ATTRIBUTE_BYTES = 4096  # a real punk's attribute string is under 100 bytes
MAX_ACCESSORIES = 16  # a real punk has at most 7
MAX_ENTRY_CHARS = 64  # one type or accessory name; real ones are under 20
_SKIN_TONE = re.compile(r"(?P<type>.*\S)\s+(?P<tone>\d{1,2})")
_SVG_DATA = re.compile(r"data:image/svg\+xml(?P<params>(?:;[^,;]{0,64}){0,4}),", re.IGNORECASE)


@dataclass(frozen=True)
class OnChainData:
    """A collection whose tokens' images and traits are read from a data contract."""

    standard: str  # the TokenSource standard its blocks read by
    data_contract: str  # lowercase 0x address
    known_supply: int  # used when the market's totalSupply cannot be read


# Market contract (lowercase) -> where its tokens' data is read. Ethereum mainnet.
ON_CHAIN_DATA: Mapping[str, OnChainData] = MappingProxyType(
    {
        "0xb47e3cd837ddf8e4c57f05d70ab865de6e193bbb": OnChainData(
            "cryptopunks", "0x16f5a35647d6f03d5d3da7b35409d65ba03af3b2", 10_000
        ),
    }
)


def _svg_call(token_id: int) -> str:
    return encode_call("punkImageSvg(uint16)", ["uint16"], [token_id])


def _attributes_call(token_id: int) -> str:
    return encode_call("punkAttributes(uint16)", ["uint16"], [token_id])


async def punks_plan(chain: ChainReader, address: str) -> tuple[TokenSource, range] | None:
    """The source and ids (0 .. totalSupply-1) of a market ON_CHAIN_DATA knows; else None.

    A data contract that does not answer ``punkAttributes(0)`` (a node of another
    chain than mainnet) raises ValueError: a collection-level error, not 10,000 failed
    rows. Node failures raise RpcError. An unreadable or implausible totalSupply falls
    back to the known supply: the ids are fixed, and the data contract is what matters.
    """
    adapter = ON_CHAIN_DATA.get(address.lower())
    if adapter is None:
        return None
    (probe,), (reply,) = await asyncio.gather(
        chain.call_many(adapter.data_contract, [_attributes_call(0)]),
        chain.call_many(address, [encode_call("totalSupply()", [], [])]),
    )
    answer = _attributes_text(probe)
    if isinstance(answer, ItemError):
        raise ValueError(
            f"{address}: its data contract {adapter.data_contract} does not answer "
            f"punkAttributes(0) ({_printable(str(answer), 200)}); is NFT1000_RPC_URL a node "
            "of Ethereum mainnet?"
        )
    supply = _supply(reply)
    if supply is None:
        log.warning(
            "%s: totalSupply() gave no usable answer (%s); using the known supply %d",
            address,
            _printable(str(reply), 100),
            adapter.known_supply,
        )
        supply = adapter.known_supply
    return TokenSource(adapter.standard, adapter.data_contract), range(supply)


def _supply(reply: str | ItemError) -> int | None:
    """totalSupply as a count of uint16 ids, or None if it is not one."""
    if isinstance(reply, ItemError) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", reply):
        return None
    supply = int(reply, 16)
    return supply if 0 < supply <= MAX_ID + 1 else None


async def punk_token_uris(
    chain: ChainReader, data_contract: str, ids: Sequence[int]
) -> dict[int, str | ItemError]:
    """Every punk's metadata as a data: URI (or why it has none), two calls per punk."""
    found: dict[int, str | ItemError] = {
        i: ItemError("not_minted", f"punk ids are 0..{MAX_ID}, not {i}")
        for i in ids
        if not 0 <= i <= MAX_ID
    }
    readable = [i for i in ids if i not in found]
    found.update(
        await chain.read_ids(
            data_contract,
            readable,
            lambda i: [_svg_call(i), _attributes_call(i)],
            lambda i, replies: punk_token_uri(i, replies[0], replies[1]),
            "this punk",
        )
    )
    return {i: found[i] for i in ids}


def punk_token_uri(
    token_id: int, svg_reply: str | ItemError, attributes_reply: str | ItemError
) -> str | ItemError:
    """One punk's metadata as a data: URI from the two eth_call replies (0x-hex), or
    why there is none: the SVG's error first, then the attributes'. Without its traits
    a punk is not kept half-read; a retryable error is read again on a rerun."""
    image = _image_uri(svg_reply)
    if isinstance(image, ItemError):
        return image
    text = _attributes_text(attributes_reply)
    if isinstance(text, ItemError):
        return text
    metadata = {
        "name": f"CryptoPunk #{token_id}",
        "image": image,
        "attributes": punk_attributes(text),
    }
    encoded = base64.b64encode(json.dumps(metadata).encode()).decode()
    return f"data:application/json;base64,{encoded}"


def _image_uri(reply: str | ItemError) -> str | ItemError:
    """punkImageSvg's SVG as a base64 data: URI; bad_uri or bad_image if it is none."""
    text = string_reply(reply, "punkImageSvg")
    if isinstance(text, ItemError):
        return text
    head = _SVG_DATA.match(text)
    if head is None:
        return ItemError("bad_uri", f"punkImageSvg is not an SVG data: URI: {text[:60]!r}")
    payload = text[head.end() :]
    if "base64" in head["params"].lower().split(";"):
        try:
            svg = base64.b64decode("".join(payload.split()), validate=True)
        except ValueError:
            return ItemError("bad_uri", "punkImageSvg's base64 is invalid")
    else:
        # The real contract writes the markup as is (quotes, '#'), not percent-encoded.
        svg = payload.encode()
    if not is_svg(svg):
        return ItemError("bad_image", f"punkImageSvg's data is not SVG: {payload[:60]!r}")
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def _attributes_text(reply: str | ItemError) -> str | ItemError:
    return string_reply(reply, "punkAttributes", max_bytes=MAX_ATTRIBUTE_BYTES, not_utf8="bad_json")


def punk_attributes(text: str) -> list[dict[str, str]]:
    """OpenSea-style traits from an attribute string such as "Male 2, Earring, Pipe".

    The first entry is the punk's type; a trailing number on it is its skin tone
    ("Male 2" -> Type Male, Skin Tone 2), so the five types count as the community
    counts them and the tone stays a trait of its own. Every later entry is an
    Accessory. Entries keep printable characters only, whitespace collapsed, cut to
    MAX_ENTRY_CHARS; empty ones are dropped, and at most MAX_ACCESSORIES are kept.
    """
    entries = [_clean(entry) for entry in text[:MAX_ATTRIBUTE_BYTES].split(",")]
    first, rest = entries[0], [e for e in entries[1:] if e][:MAX_ACCESSORIES]
    traits: list[dict[str, str]] = []
    if first:
        tone = _SKIN_TONE.fullmatch(first)
        if tone is None:
            traits.append({"trait_type": "Type", "value": first})
        else:
            traits.append({"trait_type": "Type", "value": tone["type"]})
            traits.append({"trait_type": "Skin Tone", "value": tone["tone"]})
    traits.extend({"trait_type": "Accessory", "value": accessory} for accessory in rest)
    return traits


def _clean(entry: str) -> str:
    return _printable(entry, MAX_ENTRY_CHARS)


def _printable(text: str, limit: int) -> str:
    """Printable characters only (a revert or trait may carry terminal escapes), runs of
    whitespace as one space, at most `limit` characters."""
    printable = "".join(c for c in text if c.isprintable())
    return " ".join(printable.split())[:limit].strip()
