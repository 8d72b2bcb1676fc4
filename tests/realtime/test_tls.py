"""TLS: `talker serve --certfile --keyfile` serves https:// and wss:// on its one port (browsers
give the microphone only to localhost or HTTPS pages). The certificate is self-signed, made here,
and trusted by the test's own SSL context only."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from realtime import messages as wire
from realtime.audio import encode_pcm
from tests.realtime.conftest import Speech
from tests.realtime.test_static import request


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, written to ``folder``:
    (certfile, keyfile), PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "talker test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def trusting(certfile: Path) -> ssl.SSLContext:
    """A client context that trusts exactly this certificate."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certfile))


async def whole_session(url: str, speech: Speech, **connect_args: Any) -> tuple[int, int, int]:
    """hello, all the audio (fast), end; read to the close: (frames, end.frames, close code)."""
    frames, end_frames = 0, -1
    async with connect(url, max_size=None, **connect_args) as ws:
        await ws.send(wire.encode(wire.Hello(sample_rate=16000, encoding="pcm_s16le")))
        assert isinstance(wire.decode(await ws.recv(), direction="to_client"), wire.Ready)
        for start in range(0, speech.audio16.size, 1600):
            chunk = speech.audio16[start:start + 1600]
            await ws.send(wire.encode(wire.Audio(data=encode_pcm(chunk, "pcm_s16le"))))
        await ws.send(wire.encode(wire.End()))
        async for data in ws:
            msg = wire.decode(data, direction="to_client")  # type: ignore[arg-type]
            assert not isinstance(msg, wire.Error), msg
            if isinstance(msg, wire.Frame):
                frames += 1
            elif isinstance(msg, wire.ServerEnd):
                end_frames = msg.frames
    assert ws.close_code is not None
    return frames, end_frames, ws.close_code


async def test_wss_session_and_https_pages_with_a_trusted_certificate(make_server, cert, speech):
    certfile, keyfile = cert
    server = await make_server(certfile=certfile, keyfile=keyfile)
    assert server.url == f"https://127.0.0.1:{server.port}/"
    context = trusting(certfile)
    frames, end_frames, code = await whole_session(f"wss://127.0.0.1:{server.port}/ws", speech,
                                                   ssl=context)
    assert frames > 0 and end_frames == frames and code == 1000
    status, headers, body = await request(server.port, "/", tls=context)
    assert status == 200 and headers["content-type"].startswith("text/html") and body
    # The page's own origin is https://, and that is the one /ws accepts.
    async with connect(f"wss://127.0.0.1:{server.port}/ws", ssl=context,
                       origin=f"https://127.0.0.1:{server.port}"):  # type: ignore[arg-type]
        pass
    with pytest.raises(InvalidHandshake):
        await connect(f"wss://127.0.0.1:{server.port}/ws", ssl=context,
                      origin=f"http://127.0.0.1:{server.port}")  # type: ignore[arg-type]


async def test_plain_ws_to_the_tls_port_fails_cleanly(make_server, cert, speech, caplog):
    """A ws:// client gets an error at once (no hang); the server logs no error and goes on."""
    certfile, keyfile = cert
    server = await make_server(certfile=certfile, keyfile=keyfile)
    with caplog.at_level(logging.INFO):
        with pytest.raises((InvalidHandshake, ConnectionClosed, OSError, EOFError)):
            await asyncio.wait_for(connect(f"ws://127.0.0.1:{server.port}/ws"), 5.0)
        # a client that does not trust the certificate is refused by its own TLS check
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.wait_for(connect(f"wss://127.0.0.1:{server.port}/ws"), 5.0)
        await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    frames, end_frames, code = await whole_session(f"wss://127.0.0.1:{server.port}/ws", speech,
                                                   ssl=trusting(certfile))
    assert frames > 0 and code == 1000


async def test_a_missing_or_bad_certificate_is_a_clear_config_error(make_server, cert, tmp_path):
    from models.errors import ConfigError

    certfile, keyfile = cert
    with pytest.raises(ConfigError, match="certificate"):
        await make_server(certfile=tmp_path / "missing.pem", keyfile=keyfile)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="certificate"):
        await make_server(certfile=tmp_path / "junk.pem", keyfile=keyfile)
    with pytest.raises(ConfigError, match="--keyfile"):
        await make_server(keyfile=keyfile)


def test_serve_flags_reach_the_server_config(monkeypatch, tiny_model, tmp_path):
    """`talker serve --certfile --keyfile --webrtc-host --webrtc-public-ip` end up in the
    ServerConfig the server runs with."""
    from realtime import cli
    from realtime.server import TalkerServer

    seen: list[Any] = []

    async def no_serving(self: TalkerServer) -> None:
        seen.append(self.config)

    monkeypatch.setattr(cli, "load_model", lambda *a, **k: tiny_model)
    monkeypatch.setattr(TalkerServer, "serve_forever", no_serving)
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--certfile", "c.pem", "--keyfile", "k.pem",
                              "--webrtc-host", "192.0.2.10", "--webrtc-public-ip", "203.0.113.5",
                              "--allow-origin", "https://app.example"])
    assert args.func(args) == 0
    (config,) = seen
    assert (config.certfile, config.keyfile) == (Path("c.pem"), Path("k.pem"))
    assert (config.webrtc_host, config.webrtc_public_ip) == ("192.0.2.10", "203.0.113.5")
    assert config.allow_origins == ("https://app.example",)


async def test_the_client_library_streams_over_wss_with_a_cafile(make_server, cert, speech):
    from realtime.cli import _ssl_context
    from realtime.client import ClientError, StreamOptions, stream_file

    certfile, keyfile = cert
    server = await make_server(certfile=certfile, keyfile=keyfile)
    url = f"wss://localhost:{server.port}/ws"
    options = StreamOptions(realtime=False, format="coeffs",
                            ssl_context=_ssl_context(str(certfile)))
    result = await stream_file(url, speech.audio16[:16000], 16000, options)
    assert result.frames == 30 and result.gaps == 0
    with pytest.raises(ClientError):  # the system CAs do not trust a self-signed certificate
        await stream_file(url, speech.audio16[:16000], 16000, StreamOptions(realtime=False))
