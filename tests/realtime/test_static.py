"""Plain HTTP on the server's port: which files are served, to which methods, with which headers;
who may open /ws (Origin); what /health tells whom. Raw HTTP/1.1 on real localhost sockets, so
that methods, Host headers and paths go out exactly as written."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import ssl
from pathlib import Path

import pytest

from models.errors import ConfigError
from realtime.static import OriginPolicy, ViewerFiles, viewer_csp

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web_client"


async def request(port: int, path: str, method: str = "GET",
                  headers: dict[str, str] | list[tuple[str, str]] | None = None,
                  host: str | None = None, tls: ssl.SSLContext | None = None,
                  ) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request, sent as written (no path normalisation; ``headers`` as a list
    may repeat a name): (status, headers with lower-case names, body read to the end of the
    connection)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
             "Connection: close"]
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    lines += [f"{k}: {v}" for k, v in pairs]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    # 101: a WebSocket is open now, and stays so; any other answer ends the connection.
    body = b"" if status == 101 else await asyncio.wait_for(reader.read(), 10.0)
    writer.close()
    parsed = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return status, parsed, body


def upgrade(origin: str | None) -> dict[str, str]:
    """The headers of a browser's WebSocket handshake (with ``origin``, if any)."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
               "Sec-WebSocket-Version": "13"}
    if origin is not None:
        headers["Origin"] = origin
    return headers


async def handshake(port: int, origin: str | None, host: str | None = None) -> int:
    """The status a /ws handshake gets: 101 accepted, 403 refused."""
    status, _, _ = await request(port, "/ws", headers=upgrade(origin), host=host)
    return status


# ------------------------------------------------------------------------------------ origins
async def test_the_origin_is_checked_against_the_bound_address_not_the_host_header(make_server):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends
    Host: evil.example:PORT and Origin: http://evil.example:PORT. The two agree, and the server
    must still refuse: the Host header is the attacker's."""
    server = await make_server()
    port = server.port
    evil = f"evil.example:{port}"
    assert await handshake(port, f"http://{evil}", host=evil) == 403
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}",
                   f"http://[::1]:{port}", None):  # the bound address, or not a browser
        assert await handshake(port, origin) == 101, origin
    for origin in (f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", "null",
                   f"http://127.0.0.2:{port}"):
        assert await handshake(port, origin) == 403, origin
    listed = await make_server(allow_origins=("https://app.example",))
    evil = f"evil.example:{listed.port}"
    assert await handshake(listed.port, f"http://{evil}", host=evil) == 403
    assert await handshake(listed.port, "https://app.example") == 101
    assert await handshake(listed.port, "https://app.example:443") == 101  # the same origin
    assert await handshake(listed.port, f"http://127.0.0.1:{listed.port}") == 101


def test_origin_policy_of_each_bind_address():
    loopback = OriginPolicy.for_server("127.0.0.1", 8765, tls=False)
    assert loopback.allows(None) and loopback.allows("http://localhost:8765")
    assert loopback.allows("http://LOCALHOST:8765") and not loopback.allows("http://localhost")
    assert not loopback.allows("http://192.0.2.9:8765")
    tls = OriginPolicy.for_server("127.0.0.1", 443, tls=True, allow=("http://dev.example:3000/",))
    assert tls.allows("https://127.0.0.1") and tls.allows("https://localhost:443")
    assert not tls.allows("http://127.0.0.1:443")
    assert tls.allows("http://dev.example:3000") and not tls.allows("http://dev.example")
    named = OriginPolicy.for_server("talker.lan", 8765, tls=False)
    assert named.allows("http://talker.lan:8765") and not named.allows("http://localhost:8765")
    everyone = OriginPolicy.for_server("127.0.0.1", 8765, tls=False, allow=("*",))
    assert everyone.allows("http://evil.example")
    wildcard = OriginPolicy.for_server("0.0.0.0", 8765, tls=False)  # every interface: its IPs
    assert wildcard.allows("http://127.0.0.1:8765") and not wildcard.allows("http://evil.example")
    with pytest.raises(ConfigError, match="origin"):
        OriginPolicy.for_server("127.0.0.1", 8765, tls=False, allow=("app.example",))


# ------------------------------------------------------------------------------------- /health
async def test_health_is_a_bare_liveness_answer_unless_the_token_is_shown(make_server):
    server = await make_server(token="s3cret")
    status, headers, body = await request(server.port, "/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}
    status, _, body = await request(server.port, "/health",
                                    headers={"Authorization": "Bearer s3cret"})
    details = json.loads(body)
    assert status == 200 and details["identities"] == ["alice", "bob"]
    assert details["sessions"] == 0 and "model" in details and "engine" in details
    for wrong in ("Bearer nope", "Basic czNjcmV0", "Bearer"):
        status, headers, body = await request(server.port, "/health",
                                              headers={"Authorization": wrong})
        assert status == 401 and headers["www-authenticate"] == "Bearer", wrong
        assert b"s3cret" not in body and b"alice" not in body
    # Without a configured token the server is open to whoever reaches it (a session's `ready`
    # names the identities anyway): the details are served to all.
    open_server = await make_server()
    status, _, body = await request(open_server.port, "/health")
    assert status == 200 and json.loads(body)["identities"] == ["alice", "bob"]


# --------------------------------------------------------------------------------- methods
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_only_get_and_head_are_answered(make_server, method):
    server = await make_server()
    for path in ("/", "/main.js", "/health", "/missing"):
        status, headers, body = await request(server.port, path, method=method)
        assert (status, headers["allow"]) == (405, "GET, HEAD"), (method, path)
        assert b"<html" not in body.lower()


async def test_head_sends_the_headers_of_get_without_the_body(make_server):
    server = await make_server()
    for path in ("/", "/main.js", "/health", "/missing"):
        get_status, get_headers, get_body = await request(server.port, path)
        status, headers, body = await request(server.port, path, method="HEAD")
        assert (status, body) == (get_status, b""), path
        assert headers["content-length"] == str(len(get_body)) == get_headers["content-length"]
        assert headers["content-type"] == get_headers["content-type"]


async def test_bad_paths_are_400_not_a_server_error(make_server, caplog):
    server = await make_server()
    for path in ("/%00", "/index.html%00.js", "/%ff%fe", "/a%0d%0aSet-Cookie:x=1"):
        status, _, body = await request(server.port, path)
        assert status == 400, path
        assert b"Traceback" not in body
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def test_repeated_headers_are_refused_not_a_server_error(make_server, caplog):
    server = await make_server(token="s3cret")
    port = server.port
    twice = [*upgrade(f"http://127.0.0.1:{port}").items(), ("Origin", "http://evil.example")]
    status, _, _ = await request(port, "/ws", headers=twice)
    assert status == 403
    auth = ("Authorization", "Bearer s3cret")
    for path in ("/health", "/metrics"):
        status, _, _ = await request(port, path, headers=[auth, auth])
        assert status == 401, path
    status, _, _ = await request(port, "/", headers=[("Upgrade", "websocket"), ("Upgrade", "h2c")])
    assert status == 404
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


# --------------------------------------------------------------------------------- headers
async def test_every_answer_carries_the_security_headers(make_server):
    server = await make_server()
    for path in ("/", "/main.js", "/health", "/missing", "/%00"):
        _, headers, _ = await request(server.port, path)
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
    status, headers, _ = await request(server.port, "/ws", headers=upgrade("http://evil.example"))
    assert status == 403 and headers["x-content-type-options"] == "nosniff"


async def test_the_viewer_csp_allows_its_import_map_and_nothing_inline_else(make_server):
    server = await make_server()
    _, headers, body = await request(server.port, "/")
    csp = headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    inline = re.findall(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", body, re.S)
    assert inline, "the shipped index.html has its import map inline"
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"]
    assert "'unsafe-inline'" not in csp and "*" not in csp and "http:" not in csp
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
    # the API answers allow nothing at all
    _, headers, _ = await request(server.port, "/health")
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert viewer_csp(()) != viewer_csp(("abc=",))


# ----------------------------------------------------------------------------------- files
async def test_only_the_files_the_viewer_needs_are_served(make_server):
    server = await make_server()
    needed = [
        "/", "/index.html", "/main.js", "/style.css", "/pcm-worklet.js",
        "/node_modules/three/build/three.module.js",
        "/node_modules/three/build/three.core.js",  # imported by three.module.js
        "/node_modules/three/examples/jsm/loaders/GLTFLoader.js",
        "/node_modules/three/examples/jsm/utils/BufferGeometryUtils.js",  # by GLTFLoader
        "/node_modules/three/examples/jsm/libs/basis/basis_transcoder.wasm",  # KTX2 at run time
        "/node_modules/@msgpack/msgpack/dist.esm/index.mjs",
        "/node_modules/@msgpack/msgpack/dist.esm/decode.mjs",  # by index.mjs
        "/assets/facecap.glb",
    ]
    for path in needed:
        status, _, _ = await request(server.port, path)
        assert status == 200, path
    for path in ("/package.json", "/package-lock.json", "/node_modules/three/package.json",
                 "/node_modules/three/README.md",
                 "/node_modules/three/examples/jsm/loaders/OBJLoader.js",  # never imported
                 "/node_modules/@msgpack/msgpack/dist.esm/index.mjs.map",
                 "/node_modules/three/src/Three.js", "/node_modules/",
                 "/assets/facecap.npz",  # model data, not a viewer asset
                 "/assets/../pyproject.toml", "/node_modules/three/../../main.js",
                 "/tests/fixtures/protocol/manifest.json"):
        status, _, _ = await request(server.port, path)
        assert status == 404, path


def test_viewer_files_follow_the_import_graph(tmp_path):
    web, assets = tmp_path / "web", tmp_path / "assets"
    (web / "node_modules" / "lib" / "sub").mkdir(parents=True)
    assets.mkdir()
    (web / "index.html").write_text(
        '<script type="importmap">{"imports": {"lib": "/node_modules/lib/index.js", '
        '"lib/": "/node_modules/lib/"}}</script>\n<script type="module" src="/app.js"></script>')
    (web / "app.js").write_text('import { a } from "lib";\nimport "lib/sub/b.js";\n'
                                'const w = new URL("./worklet.js", import.meta.url);\n')
    (web / "worklet.js").write_text("registerProcessor('x', class {});")
    (web / "package.json").write_text("{}")
    lib = web / "node_modules" / "lib"
    (lib / "index.js").write_text('export * from "./c.js";\nexport {\n  d as e\n} from "./d.js";')
    (lib / "c.js").write_text("export const c = 1;")
    (lib / "d.js").write_text("export const d = import('./lazy.js');")
    (lib / "lazy.js").write_text("export {};")
    (lib / "sub" / "b.js").write_text('import "../c.js";')
    (lib / "unused.js").write_text("export {};")
    (assets / "face.glb").write_bytes(b"glTF")
    (assets / "face.npz").write_bytes(b"PK")
    files = ViewerFiles.scan(web, assets)
    assert sorted(files.paths) == [
        "/", "/app.js", "/assets/face.glb", "/index.html",
        "/node_modules/lib/c.js", "/node_modules/lib/d.js", "/node_modules/lib/index.js",
        "/node_modules/lib/lazy.js", "/node_modules/lib/sub/b.js", "/worklet.js",
    ]
    assert files.lookup("/") == web / "index.html"
    assert files.lookup("/node_modules/lib/unused.js") is None
