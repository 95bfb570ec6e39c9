"""Every URI form a token can name, and the hostile ones it should not get away with."""

from __future__ import annotations

import base64
import time

import pytest

from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.uris import (
    MAX_DATA_HEADER_CHARS,
    DataLocation,
    HttpLocation,
    IpfsLocation,
    Location,
    resolve_uri,
)

S = Settings()
V0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
TXID = "bNbA3TEQVL60xlgCcqdz4ZPHFZ711cZ3hmkpGttDt_U"
ID_255 = "0" * 62 + "ff"


def resolve(uri: str, token_id: int = 1, **kwargs: int) -> Location:
    return resolve_uri(uri, token_id, S, **kwargs)


def error_of(uri: str, **kwargs: int) -> ItemError:
    with pytest.raises(ItemError) as info:
        resolve(uri, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("uri", "cid", "path"),
    [
        (f"ipfs://{V0}", V0, ""),
        (f"ipfs://{V0}/", V0, ""),
        (f"ipfs://{V0}/1.json", V0, "1.json"),
        (f"ipfs://ipfs/{V0}/a/b.png", V0, "a/b.png"),
        (f"IPFS://{V1}/x", V1, "x"),
        (f"ipfs://{V1}/a%20b/c.json?download=1#frag", V1, "a%20b/c.json"),
        (f"ipfs://{V1}/a b/(1).png", V1, "a%20b/%281%29.png"),
        (f"ipfs://{V1}//a/./b", V1, "a/b"),
        (f"ipfs://{V1}/ünï.png", V1, "%C3%BCn%C3%AF.png"),
        (f"/ipfs/{V0}/7", V0, "7"),
        (V0, V0, ""),
        (f"{V1}/meta/3.json", V1, "meta/3.json"),
        (f"https://ipfs.io/ipfs/{V0}/1.png", V0, "1.png"),
        (f"http://evil.example/ipfs/{V1}?filename=x", V1, ""),
        (f"https://{V1}.ipfs.dweb.link/img/1.png", V1, "img/1.png"),
        (f"  \n ipfs://{V0}/1 \t", V0, "1"),
    ],
)
def test_ipfs_forms(uri: str, cid: str, path: str) -> None:
    assert resolve(uri) == IpfsLocation(cid=cid, path=path)


@pytest.mark.parametrize(
    ("uri", "url"),
    [
        ("https://example.com/a/1.json", "https://example.com/a/1.json"),
        ("http://example.com:8080/x?y=1#frag", "http://example.com:8080/x?y=1"),
        ("HTTPS://Example.COM/", "https://example.com/"),
        ("https://exämple.com/ü", "https://xn--exmple-cua.com/%C3%BC"),
        ("https://docs.ipfs.tech/ipfs/readme", "https://docs.ipfs.tech/ipfs/readme"),
        (f"ar://{TXID}", f"https://arweave.net/{TXID}"),
        (f"ar://{TXID}/1.json", f"https://arweave.net/{TXID}/1.json"),
    ],
)
def test_http_and_arweave(uri: str, url: str) -> None:
    assert resolve(uri) == HttpLocation(url)


def test_arweave_uses_configured_gateway() -> None:
    settings = S.replace(arweave_gateway="https://ar.example/")
    assert resolve_uri(f"ar://{TXID}", 0, settings) == HttpLocation(f"https://ar.example/{TXID}")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://api.example/{id}.json", HttpLocation(f"https://api.example/{ID_255}.json")),
        ("https://api.example/%7Bid%7D", HttpLocation(f"https://api.example/{ID_255}")),
        (f"ipfs://{V0}/{{id}}.json", IpfsLocation(V0, f"{ID_255}.json")),
        (f"{V1}/{{id}}", IpfsLocation(V1, ID_255)),
        (f"ar://{TXID}/{{id}}", HttpLocation(f"https://arweave.net/{TXID}/{ID_255}")),
    ],
)
def test_erc1155_id_substitution(uri: str, expected: Location) -> None:
    assert resolve(uri, token_id=255) == expected


def test_id_substitution_of_a_full_width_id() -> None:
    big = 2**256 - 1
    assert resolve("https://a.example/{id}", token_id=big) == HttpLocation(
        "https://a.example/" + "f" * 64
    )


@pytest.mark.parametrize(
    ("uri", "data", "mime"),
    [
        ('data:application/json,{"a":1}', b'{"a":1}', "application/json"),
        ("data:application/json;utf8,%7B%22a%22%3A%201%7D", b'{"a": 1}', "application/json"),
        (
            "data:application/json;charset=UTF-8;base64," + base64.b64encode(b'{"n":"x"}').decode(),
            b'{"n":"x"}',
            "application/json",
        ),
        ("data:image/svg+xml;base64,PHN2Zy8+", b"<svg/>", "image/svg+xml"),
        ("data:image/svg+xml;base64,PHN2\n Zy8\t+", b"<svg/>", "image/svg+xml"),
        ("data:;base64,YWJj", b"abc", "text/plain"),
        ("data:,hello%20world", b"hello world", "text/plain"),
        ("data:text/plain;base64,YQ", b"a", "text/plain"),
        ("data:text/plain;base64,YQ%3D%3D", b"a", "text/plain"),
        ("DATA:Image/PNG;BASE64,AA==", b"\x00", "image/png"),
        ('data:application/json,{"name":"ü"}', '{"name":"ü"}'.encode(), "application/json"),
        ("data:application/json,{id}", b"{id}", "application/json"),
    ],
)
def test_data_uris(uri: str, data: bytes, mime: str) -> None:
    assert resolve(uri) == DataLocation(data=data, mime=mime)


def test_data_uri_cap_is_checked_before_decoding() -> None:
    huge = "data:image/png;base64," + "A" * (8 * 1024 * 1024)
    error = error_of(huge)
    assert error.kind == "too_large"
    assert len(str(error)) < 200
    # The image cap is larger, so the same payload passes when the caller says so.
    assert isinstance(resolve(huge, max_data_bytes=S.max_image_bytes), DataLocation)


@pytest.mark.parametrize(
    ("payload", "ok"),
    [
        ("A" * 1332, True),
        ("A" * 1336, False),
        ("A" * 1340, False),
        ("%41" * 1000, True),
        ("x" * 1001, False),
    ],
)
def test_data_uri_cap_boundaries(payload: str, ok: bool) -> None:
    uri = ("data:;base64," if payload[0] == "A" else "data:,") + payload
    if ok:
        assert len(resolve(uri, max_data_bytes=1000).data) <= 1000  # type: ignore[union-attr]
    else:
        assert error_of(uri, max_data_bytes=1000).kind == "too_large"


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("", "bad_uri"),
        ("   \n", "bad_uri"),
        ("javascript:alert(1)", "unsupported_uri"),
        ("file:///etc/passwd", "unsupported_uri"),
        ("ftp://example.com/a.png", "unsupported_uri"),
        ("ipns://k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46/x", "unsupported_uri"),
        ("gopher://x", "unsupported_uri"),
        ("C:\\images\\1.png", "unsupported_uri"),
        (f"ipfs://{V0}/../secret", "bad_uri"),
        (f"ipfs://{V0}/a/%2e%2E/b", "bad_uri"),
        (f"ipfs://{V0}/a%2Fb", "bad_uri"),
        (f"ipfs://{V0}/a%5Cb", "bad_uri"),
        (f"ipfs://{V0}/a%00b", "bad_uri"),
        (f"https://ipfs.io/ipfs/{V0}/a/..%2fb", "bad_uri"),
        ("ipfs://not-a-cid/1.json", "bad_uri"),
        ("ipfs://", "bad_uri"),
        ("ipfs://Qm" + "0" * 44, "bad_uri"),  # '0' is not base58
        ("ar://short/1", "bad_uri"),
        ("https://", "bad_uri"),
        ("https:///path", "bad_uri"),
        ("https://user:pass@example.com/", "bad_uri"),
        ("https://example.com:99999/", "bad_uri"),
        ("https://exa\x00mple.com/", "bad_uri"),
        ("https://example.com/\r\nX-Injected: 1", "bad_uri"),
        ("just some text", "bad_uri"),
        ("1.json", "bad_uri"),
        ("data:text/plain;base64", "bad_uri"),
        ("data:;base64,****", "bad_uri"),
        ("data:;base64,A", "bad_uri"),
        ("data:;base64,ÿÿÿÿ", "bad_uri"),
        ("https://example.com/" + "a" * 10_000, "bad_uri"),
    ],
)
def test_refused(uri: str, kind: str) -> None:
    error = error_of(uri)
    assert error.kind == kind
    assert len(error.message) < 300


@pytest.mark.parametrize("uri", ["ftp://" + "x" * 100_000, "https://a.example/" + "é" * 100_000])
def test_long_input_is_truncated_in_messages(uri: str) -> None:
    assert len(error_of(uri).message) < 300


def test_dot_segments_in_gateway_urls_are_resolved_like_a_browser() -> None:
    # The URL parser removes them first, so the CID never escapes: it is plain HTTP again.
    assert resolve(f"https://ipfs.io/ipfs/{V0}/../../etc") == HttpLocation("https://ipfs.io/etc")


def test_token_id_must_fit_uint256() -> None:
    with pytest.raises(ValueError):
        resolve("https://a.example/{id}", token_id=-1)


@pytest.mark.parametrize(
    "uri",
    [
        "data:" + ";" * 4_000_000 + ",x",  # a header of millions of parameters
        "data:image/png" + ";a=b" * 1_000_000,  # and no comma at all
        "https://" + "a\u0301" * 4_000 + ".example/",  # combining marks for IDNA mapping
    ],
    ids=["data-header", "data-no-comma", "idna-marks"],
)
def test_hostile_long_input_is_refused_quickly(uri: str) -> None:
    started = time.process_time()
    assert error_of(uri).kind == "bad_uri"
    assert time.process_time() - started < 1.0


def test_data_header_up_to_its_cap_is_read() -> None:
    header = "text/plain;" + "a=b;" * ((MAX_DATA_HEADER_CHARS - 20) // 4)
    assert resolve(f"data:{header},hi") == DataLocation(b"hi", "text/plain")
