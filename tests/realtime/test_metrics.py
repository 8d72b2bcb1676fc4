"""/metrics: the server's counters in Prometheus text format, scraped over real HTTP after real
sessions and parsed with prometheus_client's own parser. (The latency percentiles of ``stats``
live in realtime/metrics.py; their tests are in test_session.py and test_clients.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime import messages as wire
from realtime.client import StreamOptions, stream_file
from tests.realtime.conftest import ws_url
from tests.realtime.test_static import handshake, request

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(server, headers: dict[str, str] | None = None) -> dict:
    status, response_headers, body = await request(server.port, "/metrics", headers=headers)
    assert status == 200, body
    assert response_headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode())


async def drain(ws) -> None:
    """Read until the server closes (with an error code: ConnectionClosedError)."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def no_sessions(server) -> None:
    for _ in range(250):
        _, _, body = await request(server.port, "/health", headers=AUTH)
        if json.loads(body)["sessions"] == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("a session is still open")


async def test_metrics_after_sessions_and_refusals(make_server, speech):
    server = await make_server(token=TOKEN, max_sessions=1)
    url = ws_url(server)
    hello = wire.Hello(sample_rate=16000, encoding="pcm_s16le", token=TOKEN)
    # refusals: an origin (at the handshake), a wrong token, a full server
    assert await handshake(server.port, "http://evil.example") == 403
    async with connect(url) as ws:
        await ws.send(wire.encode(wire.Hello(sample_rate=16000, encoding="pcm_s16le",
                                             token="nope")))
        await drain(ws)
    assert ws.close_code == 1008
    async with connect(url) as holder:  # takes the one place
        await holder.send(wire.encode(hello))
        await holder.recv()  # ready
        async with connect(url) as ws:
            await ws.send(wire.encode(hello))
            await drain(ws)
        assert ws.close_code == 1013
    await no_sessions(server)  # the holder's place is free again
    result = await stream_file(url, speech.audio16, 16000,
                               StreamOptions(token=TOKEN, realtime=False))
    n_frames = len(result.seq)
    assert n_frames > 30 and result.close_code == 1000

    status, headers, _ = await request(server.port, "/metrics")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    status, _, _ = await request(server.port, "/metrics", headers={"Authorization": "Bearer x"})
    assert status == 401
    for _ in range(100):  # the last session's close is handled after its client saw it
        m = await scrape(server, AUTH)
        if m[("talker_sessions", ())] == 0:
            break
        await asyncio.sleep(0.02)
    assert m[("talker_sessions", ())] == 0
    assert m[("talker_max_sessions", ())] == 1
    assert m[("talker_frames_sent_total", ())] == n_frames
    assert m[("talker_frames_dropped_total", ())] == 0
    assert m[("talker_motion_latency_seconds_count", ())] == n_frames
    buckets = {float(dict(labels)["le"]): v for (name, labels), v in m.items()
               if name == "talker_motion_latency_seconds_bucket"}
    assert {0.05, 0.1, 0.25, 0.5} <= set(buckets) and buckets[math.inf] == n_frames
    assert 0 < m[("talker_motion_latency_seconds_sum", ())] < n_frames * 10
    assert m[("talker_inference_batches_total", ())] > 0
    assert m[("talker_inference_hops_total", ())] >= m[("talker_inference_batches_total", ())]
    assert m[("talker_inference_busy_seconds_total", ())] > 0
    assert m[("talker_inference_worker_restarts_total", ())] == 0
    for reason in ("origin", "bad_token", "server_full"):
        assert m[("talker_rejected_connections_total", (("reason", reason),))] == 1, reason
    rejected = [k for k in m if k[0] == "talker_rejected_connections_total"]
    assert len(rejected) == 3, rejected  # a session that ended well is no refusal


async def test_open_sessions_count_live_and_each_server_has_its_own_registry(make_server):
    first, second = await make_server(), await make_server()  # no token: /metrics is open
    async with connect(ws_url(first)) as ws:
        await ws.send(wire.encode(wire.Hello(sample_rate=16000, encoding="pcm_s16le")))
        await ws.recv()
        assert (await scrape(first))[("talker_sessions", ())] == 1
        assert (await scrape(second))[("talker_sessions", ())] == 0
    assert await handshake(second.port, "http://evil.example") == 403
    origin = ("talker_rejected_connections_total", (("reason", "origin"),))
    assert (await scrape(second))[origin] == 1
    assert origin not in await scrape(first)
