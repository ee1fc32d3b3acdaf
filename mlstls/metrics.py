"""Prometheus metrics of a running tunnel (``mls-tunnel ... --metrics 127.0.0.1:9464``), opt-in.

The same report ``mls-tunnel status`` prints (:mod:`mlstls.control`), exported
at scrape time by a collector (nothing is counted twice), on a small asyncio
HTTP endpoint in the tunnel's own event loop: no thread shares the tunnel's
state.  Needs the ``prometheus-client`` package (``pip install
'mls-transport[metrics]'``).  Bind it to a loopback or management address: it
names peers and their key fingerprints (no secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigurationError

Report = Callable[[], dict[str, Any]]
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0
MAX_DISCARD = 1 << 20
"""Bytes of an oversized request read (and dropped) after the 431 answer, before closing."""


class TunnelCollector:
    """A prometheus_client collector reading ``report()`` at each scrape."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def describe(self) -> list[Any]:
        return []  # no fixed set: the collector is not checked against a description at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        report = self.report()
        peer = ["peer"]
        metrics: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "up": GaugeMetricFamily("mls_tunnel_link_up", "1 if the link to this peer is up", labels=peer),
            "epoch": GaugeMetricFamily("mls_tunnel_epoch", "MLS epoch of the keys in use", labels=peer),
            "streams": GaugeMetricFamily("mls_tunnel_streams", "open tunnelled connections", labels=peer),
            "rekeys": CounterMetricFamily("mls_tunnel_rekeys", "PCS rekeys that took effect", labels=peer),
            "bytes": CounterMetricFamily("mls_tunnel_bytes", "bytes through the link", labels=["peer", "direction"]),
            "refused": CounterMetricFamily("mls_tunnel_streams_refused", "streams refused (service unknown or "
                                           "closed to the peer)", labels=peer),
            "reconnects": CounterMetricFamily("mls_tunnel_reconnects", "link connections after the first",
                                              labels=peer),
            "resumptions": CounterMetricFamily("mls_tunnel_resumptions", "stored sessions resumed", labels=peer),
            "rekeys_abandoned": CounterMetricFamily("mls_tunnel_rekeys_abandoned", "our rekeys given up because "
                                                    "the session store could not take them", labels=peer),
            "commits_deferred": CounterMetricFamily("mls_tunnel_commits_deferred", "peer commits that waited "
                                                    "for the session store", labels=peer),
            "epochs_stored_late": CounterMetricFamily("mls_tunnel_epochs_stored_late", "confirmed commits of ours "
                                                      "the session store took only later", labels=peer),
        }
        for who, links in _per_peer(report["links"]).items():
            name = [who]
            metrics["up"].add_metric(name, max(1 if link["state"] in ("up", "connected", "resumed") else 0
                                               for link in links))
            epochs = [link["epoch"] for link in links if link["epoch"] is not None]
            if epochs:
                metrics["epoch"].add_metric(name, max(epochs))

            def total(field: str, links: list[dict[str, Any]] = links) -> int:
                return sum(int(link[field]) for link in links)
            metrics["streams"].add_metric(name, total("streams"))
            metrics["rekeys"].add_metric(name, total("rekeys"))
            metrics["bytes"].add_metric([*name, "in"], total("bytes_in"))
            metrics["bytes"].add_metric([*name, "out"], total("bytes_out"))
            metrics["refused"].add_metric(name, total("streams_refused"))
            metrics["reconnects"].add_metric(name, total("reconnects"))
            metrics["resumptions"].add_metric(name, total("resumptions"))
            metrics["rekeys_abandoned"].add_metric(name, total("rekeys_abandoned"))
            metrics["commits_deferred"].add_metric(name, total("commits_deferred"))
            metrics["epochs_stored_late"].add_metric(name, total("epochs_stored_late"))
        yield from metrics.values()
        store = report.get("store")
        if store:
            available = GaugeMetricFamily("mls_tunnel_store_available", "1 while the session store takes calls")
            available.add_metric([], 1 if store["available"] else 0)
            yield available
            calls = CounterMetricFamily("mls_tunnel_store_calls", "session store calls by outcome",
                                        labels=["outcome"])
            calls.add_metric(["made"], store["calls"])
            for outcome in ("timeouts", "failures", "fast_failures"):
                calls.add_metric([outcome], store[outcome])
            yield calls
        failures = CounterMetricFamily("mls_tunnel_handshake_failures", "failed MLS handshakes by alert",
                                       labels=["reason"])
        for reason, count in sorted(report["handshake_failures"].items()):
            failures.add_metric([reason], count)
        yield failures
        reloads = CounterMetricFamily("mls_tunnel_reloads", "configuration reloads", labels=["result"])
        reloads.add_metric(["applied"], report["reloads"]["applied"])
        reloads.add_metric(["refused"], report["reloads"]["refused"])
        yield reloads


def _per_peer(links: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Links grouped by peer name: one series per peer, however many links it has (two processes sharing
    one identity, say): counters and gauges are summed, ``up`` and ``epoch`` are the highest."""
    peers: dict[str, list[dict[str, Any]]] = {}
    for link in links:
        peers.setdefault(link["peer"] or "?", []).append(link)
    return peers


def exposition(report: Report) -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError:  # checked at start by check_available; kept for library users
        raise ConfigurationError("--metrics needs the prometheus-client package: "
                                 "pip install 'mls-transport[metrics]'") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TunnelCollector(report))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def check_available() -> None:
    """ConfigurationError with the fix if prometheus-client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError("--metrics needs the prometheus-client package: "
                                 "pip install 'mls-transport[metrics]'") from None


async def serve_metrics(host: str, port: int, report: Report) -> asyncio.Server:
    """``GET /metrics`` on ``host``:``port`` (HTTP/1.0, one request per connection)."""
    check_available()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
                except asyncio.LimitOverrunError:
                    await _too_large(reader, writer)
                    return
                method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
                path = rest.split(b" ", 1)[0]
                if method != b"GET" or path.split(b"?", 1)[0] != b"/metrics":
                    body, status, kind = b"not found: try /metrics\n", b"404 Not Found", "text/plain"
                else:
                    (body, kind), status = exposition(report), b"200 OK"
                writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind.encode() +
                             b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        finally:
            writer.close()

    try:
        return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen for --metrics on {host}:{port}: "
                                 f"{(exc.strerror or str(exc)).lower()}") from None


async def _too_large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A request head over MAX_REQUEST_HEAD: answer 431, then read what the client still sends (at most
    MAX_DISCARD bytes, for REQUEST_TIMEOUT) so that closing does not reset the connection under our answer."""
    body = b"request head too large\n"
    writer.write(b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    discarded = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REQUEST_TIMEOUT):
            while discarded < MAX_DISCARD and (data := await reader.read(1 << 16)):
                discarded += len(data)
