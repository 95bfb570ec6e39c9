"""The one HTTP client for token-named URLs: safe addresses, caps, retries, politeness.

URLs come from attacker-controlled metadata, so every hop is checked before any
packet leaves: IP-literal hosts here, names in the resolver (aiohttp connects to
exactly the addresses the resolver returns, so DNS cannot rebind between check and
connect). Redirects are followed by hand so each Location is checked the same way.
Bodies are capped after decompression (aiohttp inflates in bounded steps and the
cap counts the inflated bytes), and transient failures back off with full jitter.

Time is bounded twice: each attempt by the socket timeouts and
``request_timeout_s``, and each URL by one deadline (``url_deadline_s``) over all
its attempts, backoff sleeps and redirect hops, so a server that drips bytes or
answers every hop just under the per-attempt timeout holds a slot no longer than
the deadline. aiohttp bounds response headers (128 lines of at most 8,190 bytes).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from tasks.core.errors import ItemError
from tasks.core.retry import backoff_delay
from tasks.core.settings import Settings
from tasks.ingest.politeness import HostLimiter, host_limiter

Sleep = Callable[[float], Awaitable[None]]
# Checks a body as soon as it arrives: a retryable ItemError it raises (a CAR cut
# short, a block that does not hash) is retried like a transient failure.
BodyCheck = Callable[[bytes], None]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_CGNAT = ip_network("100.64.0.0/10")
_NAT64 = ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")
# WHATWG treats a host whose last label is a number as IPv4 (0x7f.1, 2130706433, 0177.0.0.1).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


@dataclass(frozen=True)
class FetchResult:
    """A successful response, body already read within its cap."""

    body: bytes
    content_type: str | None
    final_url: str
    status: int


def is_public_address(addr: IPv4Address | IPv6Address) -> bool:
    """True only for globally routable unicast addresses, including any embedded IPv4."""
    if isinstance(addr, IPv6Address) and addr in _NAT64:
        return is_public_address(IPv4Address(int(addr) & 0xFFFFFFFF))
    # ::/8 is reserved, which covers IPv4-mapped, IPv4-compatible and local-use NAT64.
    if (
        not addr.is_global
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_unspecified
        or addr.is_private
    ):
        return False
    if isinstance(addr, IPv4Address):
        return addr not in _CGNAT
    if addr.is_site_local:
        return False
    embedded = [addr.sixtofour, *(addr.teredo or ())]
    return all(v4 is None or is_public_address(v4) for v4 in embedded)


def _host_key(host: str, port: int) -> str:
    """``host:port`` as written in settings.allow_hosts (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _PublicResolver(AbstractResolver):
    """Resolves names and refuses any whose answers include a non-public address."""

    def __init__(self, allow: frozenset[str], timeout_s: float) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow = allow
        self._timeout_s = timeout_s

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        async with asyncio.timeout(self._timeout_s):
            answers = await self._inner.resolve(host, port, family)
        if _host_key(host, port) not in self._allow:
            for answer in answers:
                if not is_public_address(ip_address(answer["host"])):
                    raise ItemError("blocked_address", f"{host} resolves to {answer['host']}")
        return answers

    async def close(self) -> None:
        await self._inner.close()


class _Retry(Exception):
    """A transient failure: the error to raise once retries run out, and any Retry-After."""

    def __init__(self, error: ItemError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class SafeFetcher:
    """Async context manager owning one session; ``get`` fetches one URL safely."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        limiter: HostLimiter | None = None,
    ) -> None:
        self.requests = 0
        self.bytes_received = 0
        self._settings = settings
        self._allow = frozenset(h.lower() for h in settings.allow_hosts)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._resolver: _PublicResolver | None = None
        # Per-host slots and pace: cluster-wide on a Dask worker (tasks.ingest.politeness).
        # A limiter the caller passes in is the caller's to close.
        self._owns_limiter = limiter is None
        self._limiter = limiter if limiter is not None else host_limiter(settings)

    @property
    def url_deadline_s(self) -> float:
        """Seconds one URL (or one IPFS download over every gateway) may take in all."""
        return self._settings.url_deadline_s

    async def __aenter__(self) -> SafeFetcher:
        s = self._settings
        self._resolver = _PublicResolver(self._allow, s.connect_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=self._resolver,
                limit=s.concurrency,
            ),
            timeout=aiohttp.ClientTimeout(
                total=s.request_timeout_s,
                sock_connect=s.connect_timeout_s,
                sock_read=s.read_timeout_s,
            ),
            headers={"User-Agent": s.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._resolver is not None:
            await self._resolver.close()
        if self._owns_limiter:
            await self._limiter.aclose()

    async def get(
        self,
        url: str,
        *,
        max_bytes: int,
        accept: str | None = None,
        deadline: float | None = None,
        check: BodyCheck | None = None,
    ) -> FetchResult:
        """GET ``url`` following checked redirects, retrying transient failures.

        Everything (attempts, backoff, redirects) ends by ``deadline``, an event-loop
        time; by default ``url_deadline_s`` from now. Past it: ItemError "timeout".
        ``check`` runs on each body; its retryable errors are retried too.
        """
        target = self._check(_parse(url))
        now = asyncio.get_running_loop().time()
        if deadline is None:
            deadline = now + self._settings.url_deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                return await self._follow(url, target, max_bytes, accept, deadline, check)
        except TimeoutError:
            raise ItemError(
                "timeout",
                f"not fetched within its deadline of {deadline - now:.1f} s: {_short(target)}",
            ) from None

    async def _follow(
        self,
        url: str,
        target: URL,
        max_bytes: int,
        accept: str | None,
        deadline: float,
        check: BodyCheck | None,
    ) -> FetchResult:
        """The attempts and redirect hops of one ``get``."""
        loop = asyncio.get_running_loop()
        retries = redirects = 0
        while True:
            try:
                step = await self._attempt(target, max_bytes, accept)
                if isinstance(step, FetchResult) and check is not None:
                    _checked(check, step.body)
            except _Retry as retry:
                if retries >= self._settings.max_retries:
                    raise retry.error from None
                delay = self._backoff(retries, retry.retry_after)
                if loop.time() + delay >= deadline:
                    raise retry.error from None  # waiting would only end in the deadline
                await self._sleep(delay)
                retries += 1
                continue
            if isinstance(step, FetchResult):
                return step
            redirects += 1
            limit = self._settings.max_redirects
            if redirects > limit:
                raise ItemError("http_status", f"more than {limit} redirects: {url[:200]}")
            target = self._check(step)

    def _check(self, url: URL) -> URL:
        """Refuse a URL before any packet is sent unless it may be fetched."""
        if url.scheme not in ("http", "https"):
            raise ItemError("unsupported_uri", f"scheme {url.scheme!r} in {_short(url)}")
        try:
            host, port = url.raw_host, url.port
        except ValueError as exc:  # yarl parses some hosts only when asked (::ffff:127.1)
            raise ItemError("bad_uri", f"malformed host in a URL: {exc}") from None
        if not host or port is None:
            raise ItemError("bad_uri", f"no host in {_short(url)}")
        if url.raw_user is not None or url.raw_password is not None:
            raise ItemError("bad_uri", f"credentials in {_short(url)}")
        if _host_key(host, port) in self._allow:
            return url
        if ":" in host:  # IPv6 literal (yarl checked it); aiohttp will not ask the resolver
            if "%" in host:
                raise ItemError("bad_uri", f"zone id in host of {_short(url)}")
            try:
                literal = ip_address(host)
            except ValueError:  # yarl passes forms such as ::ffff:127.1 that Python does not
                raise ItemError("blocked_address", f"unusual IPv6 form {host!r}") from None
            _refuse_private(literal, url)
            return url
        if len(host) > 253 or not _HOSTNAME.fullmatch(host):
            raise ItemError("bad_uri", f"malformed host in {_short(url)}")
        if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
            try:
                canonical = ip_address(host)
            except ValueError:
                raise ItemError("blocked_address", f"unusual IPv4 form {host!r}") from None
            _refuse_private(canonical, url)
        return url

    async def _attempt(self, url: URL, max_bytes: int, accept: str | None) -> FetchResult | URL:
        """One request, in one of its host's slots (ItemError "timeout" if none comes).

        Hosts in allow_hosts are the operator's own services (a local gateway): only
        the shard's ``concurrency`` bounds them, not the politeness owed to others.
        """
        host = _host_key(url.raw_host or "", url.port or 0)
        if host in self._allow:
            return await self._request(url, max_bytes, accept)
        async with self._limiter.slot(host):
            return await self._request(url, max_bytes, accept)

    async def _request(self, url: URL, max_bytes: int, accept: str | None) -> FetchResult | URL:
        """One request: the result, a redirect target, or a _Retry/ItemError."""
        if self._session is None:
            raise RuntimeError("use SafeFetcher as an async context manager")
        headers = {"Accept": accept} if accept else {}
        # Counted here, not by an aiohttp trace hook (which costs several coroutine
        # calls per request); an attempt that never connected sent nothing.
        self.requests += 1
        answered = False
        try:
            try:
                async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                    answered = True
                    return await self._read(url, resp, max_bytes)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, ItemError):
                if not answered:  # refused by the resolver, or never connected
                    self.requests -= 1
                raise
        except TimeoutError:
            raise _Retry(ItemError("timeout", f"timed out on {_short(url)}")) from None
        except (aiohttp.ClientConnectorDNSError, aiohttp.ClientSSLError) as exc:
            # Not retried here (dead domains and bad certificates are common and
            # do not heal in seconds); still retryable by a later run.
            raise ItemError("connection", f"{type(exc).__name__}: {exc}") from None
        except aiohttp.InvalidURL:
            raise ItemError("bad_uri", f"aiohttp refused {_short(url)}") from None
        except aiohttp.ClientError as exc:
            error = ItemError("connection", f"{type(exc).__name__} on {_short(url)}")
            raise _Retry(error) from None

    async def _read(
        self, url: URL, resp: aiohttp.ClientResponse, max_bytes: int
    ) -> FetchResult | URL:
        """Turn a response into a result, a redirect target, or an error."""
        status = resp.status
        if status in _REDIRECTS:
            location = resp.headers.get("Location")
            if not location:
                raise ItemError("http_status", f"HTTP {status} without Location: {_short(url)}")
            try:
                return url.join(_parse(location))
            except ValueError as exc:  # yarl checks the joined host only now
                raise ItemError("bad_uri", f"bad redirect from {_short(url)}: {exc}") from None
        if status == 429 or status >= 500:
            error = ItemError("http_status_retryable", f"HTTP {status} from {_short(url)}")
            raise _Retry(error, _retry_after(resp.headers.get("Retry-After")))
        if not 200 <= status < 300:
            raise ItemError("http_status", f"HTTP {status} from {_short(url)}")
        if resp.content_length is not None and resp.content_length > max_bytes:
            raise ItemError("too_large", f"Content-Length {resp.content_length} > {max_bytes}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            self.bytes_received += len(chunk)
            body += chunk
            if len(body) > max_bytes:
                raise ItemError("too_large", f"body over {max_bytes} bytes: {_short(url)}")
        content_type = resp.content_type if "Content-Type" in resp.headers else None
        return FetchResult(bytes(body), content_type, str(url), status)

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        s = self._settings
        return backoff_delay(retry, s.backoff_base_s, s.backoff_max_s, self._rng, retry_after)


def _checked(check: BodyCheck, body: bytes) -> None:
    """Run a body check, turning its retryable errors into a retry of the request."""
    try:
        check(body)
    except ItemError as e:
        if e.retryable:
            raise _Retry(e) from None
        raise


def _parse(url: str) -> URL:
    """Parse a URL, mapping parser errors to bad_uri."""
    try:
        return URL(url)
    except ValueError as exc:
        raise ItemError("bad_uri", f"malformed URL ({exc}): {url[:200]!r}") from None


def _refuse_private(addr: IPv4Address | IPv6Address, url: URL) -> None:
    """Raise blocked_address for a non-public IP-literal host."""
    if not is_public_address(addr):
        raise ItemError("blocked_address", f"{addr} is not a public address: {_short(url)}")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _short(url: URL) -> str:
    """A bounded rendering of an attacker-chosen URL for messages, without credentials."""
    text = str(url if url.raw_user is None else url.with_user(None))
    return text if len(text) <= 200 else text[:200] + "..."
