"""A local Ethereum chain holding demo copies of real collections (Moonbirds, Loot).

The pipeline reads token URIs from a real node; for the demo and the tests that node
is anvil, with contracts compiled by solc-js and filled through anvil's unlocked
default account (anvil automines, so no signing library is needed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from eth_abi.abi import encode

from infra.process import ServiceSpec
from tasks.ingest.chain import encode_call

CHAIN_DIR = Path(__file__).resolve().parent / "chain"
ANVIL = CHAIN_DIR / "node_modules" / ".bin" / "anvil"

# Few, large transactions keep the deploy fast: a 500 KB batch of Loot strings uses about
# 3.5e8 gas and 2,500 Moonbirds mints 6.3e7, both beyond mainnet's 3e7 block gas limit.
BLOCK_GAS_LIMIT = 2_000_000_000
TX_GAS = 1_000_000_000
MOONBIRDS_PER_TX = 2_500
LOOT_BYTES_PER_TX = 500_000  # hex-encoded, a request stays under anvil's 2 MB cap
RECEIPT_TIMEOUT_S = 60.0


class DeployError(RuntimeError):
    """A demo deployment transaction failed."""


def anvil_spec(state_dir: Path, port: int) -> ServiceSpec:
    """anvil on 127.0.0.1 with a block gas limit big enough for the demo's mint batches."""
    return ServiceSpec(
        name="anvil",
        argv=[
            str(ANVIL),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--gas-limit",
            str(BLOCK_GAS_LIMIT),
            "--silent",
        ],
        state_dir=state_dir,
        ready_port=port,
    )


def _sources_hash() -> str:
    h = hashlib.sha256()
    for path in [CHAIN_DIR / "compile.mjs", *sorted((CHAIN_DIR / "contracts").glob("*.sol"))]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def compile_contracts(out: Path) -> dict[str, Any]:
    """Artifacts {name: {abi, bytecode}}; solc-js runs only when the sources changed."""
    digest = _sources_hash()
    stamp = out.with_name(out.name + ".sha256")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return cast(dict[str, Any], json.loads(out.read_text()))
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node (Node.js 20+) is needed to compile the demo contracts")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    proc = subprocess.run(
        [node, str(CHAIN_DIR / "compile.mjs"), str(tmp)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the demo contracts failed:\n{proc.stderr[-4000:]}")
    tmp.replace(out)
    stamp.write_text(digest)
    return cast(dict[str, Any], json.loads(out.read_text()))


def rpc(rpc_url: str, method: str, params: list[Any]) -> Any:
    """One plain JSON-RPC call to the demo node (deployment only; reads use tasks.ingest.chain)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(
        rpc_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        reply = json.loads(r.read())
    if "error" in reply:
        raise DeployError(f"{method}: {reply['error']}")
    return reply["result"]


def send_transaction(rpc_url: str, sender: str, data: str, to: str | None = None) -> dict[str, Any]:
    """Send a transaction, which anvil mines at once; its receipt, checked for success."""
    tx = {"from": sender, "data": data, "gas": hex(TX_GAS)}
    if to is not None:
        tx["to"] = to
    tx_hash = rpc(rpc_url, "eth_sendTransaction", [tx])
    deadline = time.monotonic() + RECEIPT_TIMEOUT_S
    while (receipt := rpc(rpc_url, "eth_getTransactionReceipt", [tx_hash])) is None:
        if time.monotonic() > deadline:
            raise DeployError(f"transaction {tx_hash} not mined in {RECEIPT_TIMEOUT_S}s")
        time.sleep(0.01)
    if int(receipt["status"], 16) != 1:
        raise DeployError(f"transaction {tx_hash} failed: {receipt}")
    return cast(dict[str, Any], receipt)


def deploy_contract(
    rpc_url: str, sender: str, artifact: dict[str, Any], types: list[str], args: list[Any]
) -> str:
    """Deploy a compiled contract with ABI-encoded constructor arguments; its address."""
    data = artifact["bytecode"] + encode(types, args).hex()
    return str(send_transaction(rpc_url, sender, data)["contractAddress"])


def _loot_batches(uris: Sequence[str]) -> list[Sequence[str]]:
    """Consecutive slices of URIs whose calldata stays under LOOT_BYTES_PER_TX."""
    batches: list[Sequence[str]] = []
    start = size = 0
    for i, uri in enumerate(uris):
        cost = len(uri.encode()) + 96  # string bytes plus offset, length and padding
        if i > start and size + cost > LOOT_BYTES_PER_TX:
            batches.append(uris[start:i])
            start, size = i, 0
        size += cost
    if start < len(uris):
        batches.append(uris[start:])
    return batches


def deploy_demo(
    rpc_url: str,
    artifacts: dict[str, Any],
    moonbirds_metadata_cid: str,
    moonbirds_count: int,
    loot_token_uris: Sequence[str],
) -> dict[str, str]:
    """Deploy and fill the demo collections; their addresses by collection name."""
    sender = str(rpc(rpc_url, "eth_accounts", [])[0])
    moonbirds = deploy_contract(
        rpc_url,
        sender,
        artifacts["DemoPFP"],
        ["string", "string", "string", "uint256"],
        ["Moonbirds", "MOONBIRD", f"ipfs://{moonbirds_metadata_cid}/", 0],
    )
    for start in range(0, moonbirds_count, MOONBIRDS_PER_TX):
        count = min(MOONBIRDS_PER_TX, moonbirds_count - start)
        data = encode_call("mintBatch(address,uint256)", ["address", "uint256"], [sender, count])
        send_transaction(rpc_url, sender, data, to=moonbirds)
    loot = deploy_contract(
        rpc_url, sender, artifacts["DemoOnChain"], ["string", "string"], ["Loot", "LOOT"]
    )
    first_id = 1
    for batch in _loot_batches(loot_token_uris):
        data = encode_call(
            "mintWithURIs(address,uint256,string[])",
            ["address", "uint256", "string[]"],
            [sender, first_id, list(batch)],
        )
        send_transaction(rpc_url, sender, data, to=loot)
        first_id += len(batch)
    return {"Moonbirds": moonbirds, "Loot": loot}


def read_loot_uris(archive: Path, limit: int) -> list[str]:
    """The first `limit` Loot token URIs (ids 1..limit) from the loot archive."""
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile("loot/tokenURI.jsonl")
        if member is None:
            raise FileNotFoundError(f"{archive} has no loot/tokenURI.jsonl")
        rows = [json.loads(line) for line in member if line.strip()]
    rows.sort(key=lambda row: int(row["tokenId"]))
    rows = rows[:limit]
    if [int(row["tokenId"]) for row in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{archive}: token ids are not 1..{len(rows)}, as the demo mints them")
    return [str(row["tokenURI"]) for row in rows]
