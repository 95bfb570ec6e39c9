"""What a contract is, asked in one JSON-RPC batch before any token is read.

ERC-165 ``supportsInterface`` answers first where the contract implements it (it says
yes to ERC-165's own id and no to 0xffffffff, so an answer-anything fallback is not
believed). Probes of ``ownerOf``, ``tokenURI`` and ``uri`` at ids 0 and 1 fill in for
contracts without it and tell a 0- or 1-based collection from one whose ids start
elsewhere. A contract that certainly cannot give token URIs gets a reason a person
understands, instead of thousands of ``not_minted`` rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader, Reverted, decode_string, encode_call

# ERC-165 interface ids.
ERC165 = bytes.fromhex("01ffc9a7")
NOT_AN_INTERFACE = bytes.fromhex("ffffffff")  # ERC-165: a compliant contract says no
ERC721 = bytes.fromhex("80ac58cd")
ERC721_METADATA = bytes.fromhex("5b5e139f")
ERC721_ENUMERABLE = bytes.fromhex("780e9d63")
ERC1155 = bytes.fromhex("d9b67a26")
_ASKED = (ERC165, NOT_AN_INTERFACE, ERC721, ERC721_METADATA, ERC721_ENUMERABLE, ERC1155)
_PROBED_IDS = (0, 1)
_PROBES = ("ownerOf(uint256)", "tokenURI(uint256)", "uri(uint256)")
_SAY_RANGE = "give its token id range explicitly as ADDRESS:FIRST-LAST if it has tokens"
_WORD = re.compile(r"0x[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ContractInterface:
    """What planning needs to know about a contract."""

    standard: str  # "erc721" or "erc1155": how its URIs are read
    enumerable: bool  # ERC721Enumerable: tokenByIndex lists its ids
    existing: tuple[int, ...]  # which of ids 0 and 1 are tokens (ownerOf or a URI answers)
    problem: str | None = None  # why its tokens cannot be read, when that is certain


def _word(reply: str | ItemError) -> int | None:
    """A one-word answer as an int, or None for a revert or anything else."""
    if isinstance(reply, ItemError) or not _WORD.fullmatch(reply):
        return None
    return int(reply, 16)


def _flag(reply: str | ItemError) -> bool:
    return _word(reply) == 1


def has_owner(reply: str | ItemError) -> bool:
    """ownerOf answered with a nonzero address."""
    return bool(_word(reply))


def has_text(reply: str | ItemError) -> bool:
    """The call answered with a nonempty ABI string."""
    if isinstance(reply, ItemError):
        return False
    try:
        return bool(decode_string(reply).strip())
    except ValueError:
        return False


def _no_function(reply: str | ItemError) -> bool:
    """Reverted with no data: what calling a function the contract lacks gives."""
    return isinstance(reply, Reverted) and reply.data == b""


async def detect_interface(chain: ChainReader, address: str) -> ContractInterface:
    """The contract's standard, whether it enumerates, and which of ids 0 and 1 exist.

    Node failures raise RpcError.
    """
    calls = [encode_call("supportsInterface(bytes4)", ["bytes4"], [i]) for i in _ASKED]
    calls += [encode_call(f, ["uint256"], [i]) for f in _PROBES for i in _PROBED_IDS]
    replies = await chain.call_many(address, calls)
    erc165, fallback, erc721, metadata, enumerable, erc1155 = map(_flag, replies[:6])
    owners, token_uris, uris = (replies[6 + 2 * n : 8 + 2 * n] for n in range(3))
    declared = erc165 and not fallback  # only then are its answers believed
    existing = tuple(
        i
        for i, owner, token_uri, uri in zip(_PROBED_IDS, owners, token_uris, uris, strict=True)
        if has_owner(owner) or has_text(token_uri) or has_text(uri)
    )
    answers_token_uri = any(map(has_text, token_uris))
    if declared and erc1155 and not (erc721 or answers_token_uri):
        return ContractInterface("erc1155", False, existing)
    if not declared and any(map(has_text, uris)) and not answers_token_uri:
        return ContractInterface("erc1155", False, existing)
    found = ContractInterface("erc721", declared and enumerable, existing)
    if declared and not (erc721 or metadata or erc1155 or existing):
        return _problem(
            found,
            f"{address} says through ERC-165 (supportsInterface) that it is neither an "
            "ERC-721 nor an ERC-1155 contract, and neither token 0 nor 1 answers: "
            f"not an NFT collection; {_SAY_RANGE}",
        )
    lacking = [
        i
        for i, owner, token_uri, uri in zip(_PROBED_IDS, owners, token_uris, uris, strict=True)
        if has_owner(owner) and _no_function(token_uri) and _no_function(uri)
    ]
    if lacking and not (metadata or answers_token_uri):
        return _problem(
            found,
            f"{address} has no tokenURI(uint256): token {lacking[0]} exists (ownerOf answers) "
            "but tokenURI and uri revert without a reason, as calls to functions a contract "
            "lacks do: not an ERC-721 metadata contract (nor ERC-1155), so its tokens "
            "have no metadata to read",
        )
    return found


def _problem(found: ContractInterface, reason: str) -> ContractInterface:
    return ContractInterface(found.standard, found.enumerable, found.existing, reason)
