"""Plain HTTP on the server's one port: the viewer's files and the face asset, and the rules every
HTTP answer follows (methods, security headers, who may open /ws, bearer tokens).

Served through websockets' ``process_request`` hook, so no second HTTP framework is needed
(DESIGN §7). What may be served is decided once, at start-up (:class:`ViewerFiles`): the viewer's
own files, the ``node_modules`` files its imports reach, and the face assets. Any other path is a
404; a URL is looked up in that map and never turned into a file-system path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import psutil
from websockets.datastructures import Headers
from websockets.http11 import Response

from models.errors import ConfigError

__all__ = [
    "ALLOWED_METHODS", "API_CSP", "OriginPolicy", "ViewerFiles", "authorized", "bad_request",
    "decode_path", "head_only", "json_response", "method_not_allowed", "response",
    "text_response", "unauthorized", "viewer_csp",
]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".bin": "application/octet-stream",
    ".ktx2": "image/ktx2",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
_MAX_FILE_BYTES = 64 * 1024 * 1024
ALLOWED_METHODS = ("GET", "HEAD")

# The viewer's own files: what web_root holds at its top level with these suffixes (package.json
# and the lock file are npm's, not the viewer's).
VIEWER_SUFFIXES = (".html", ".js", ".mjs", ".css")
# Face assets the viewer can load (?asset=URL): glTF and its images. Not the .npz rig data.
ASSET_SUFFIXES = (".glb", ".gltf", ".bin", ".ktx2", ".png", ".jpg", ".jpeg", ".webp")
# Fetched at run time by three's KTX2Loader (its transcoder path + these names), not imported:
# the import-graph walk cannot see them.
RUNTIME_FILES = (
    "/node_modules/three/examples/jsm/libs/basis/basis_transcoder.js",
    "/node_modules/three/examples/jsm/libs/basis/basis_transcoder.wasm",
)

# Every answer, whatever it is (OWASP's secure-headers baseline).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"  # JSON and text answers run nothing


def viewer_csp(script_hashes: Iterable[str]) -> str:
    """The Content-Security-Policy of the viewer's files. ``script_hashes``: base64 SHA-256 of
    each inline script of its pages (the import map, which cannot be an external file)."""
    hashes = "".join(f" 'sha256-{h}'" for h in sorted(script_hashes))
    return "; ".join((
        "default-src 'self'",
        # 'wasm-unsafe-eval': the meshopt decoder and the KTX2 (Basis) transcoder compile wasm.
        # 'unsafe-eval': the Basis transcoder's JS glue (Emscripten embind) builds its bindings
        # with new Function(), in a blob: worker, and blob: workers take the page's policy;
        # without it the face's KTX2 textures never load. No 'unsafe-inline': injected <script>
        # and inline handlers stay blocked. Drop it with a transcoder built without dynamic
        # execution, or a face asset without KTX2 textures.
        f"script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'{hashes}",
        "worker-src 'self' blob:",  # KTX2Loader runs its transcoder in blob: workers
        "connect-src 'self' blob:",  # /ws, /health, assets; GLTFLoader fetches its blob: images
        "img-src 'self' blob: data:",  # glTF textures as blob: URLs; the empty data: favicon
        "media-src 'self' blob:",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ))


# ----------------------------------------------------------------------------------- answers
def response(status: HTTPStatus, body: bytes, content_type: str, csp: str = API_CSP,
             **extra: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-cache"
    headers["Content-Security-Policy"] = csp
    for key, value in SECURITY_HEADERS.items():
        headers[key] = value
    for key, value in extra.items():
        headers[key.replace("_", "-")] = value
    return Response(status.value, status.phrase, headers, body)


def json_response(payload: object, status: HTTPStatus = HTTPStatus.OK) -> Response:
    body = json.dumps(payload, indent=1, sort_keys=True).encode()
    return response(status, body, "application/json")


def text_response(status: HTTPStatus, text: str, **extra: str) -> Response:
    return response(status, (text + "\n").encode(), "text/plain; charset=utf-8", **extra)


def method_not_allowed() -> Response:
    return text_response(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD",
                         Allow=", ".join(ALLOWED_METHODS))


def bad_request(why: str) -> Response:
    return text_response(HTTPStatus.BAD_REQUEST, why)


def unauthorized() -> Response:
    return text_response(HTTPStatus.UNAUTHORIZED, "this needs Authorization: Bearer TOKEN",
                         WWW_Authenticate="Bearer")


def head_only(answer: Response) -> Response:
    """The answer to HEAD: GET's status and headers (Content-Length included), no body."""
    return replace(answer, body=b"")


def decode_path(target: str) -> str | None:
    """The request target's path, percent-decoded; None when it is not valid UTF-8 or holds a
    control character (NUL, CR, LF...): the caller answers 400."""
    try:
        path = unquote(urlsplit(target).path, errors="strict")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return None
    return path


def authorized(headers: Headers, token: str | None) -> bool:
    """True when no token is configured, or the request shows ``Authorization: Bearer TOKEN``
    once (compared in constant time)."""
    if token is None:
        return True
    values = headers.get_all("Authorization")
    if len(values) != 1:
        return False
    scheme, _, given = values[0].partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


# ---------------------------------------------------------------------------------- origins
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WILDCARDS = ("", "0.0.0.0", "::")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

Origin = tuple[str, str, int]  # (scheme, host in lower case without brackets, port)


def _origin_key(text: str) -> Origin | None:
    """An http(s) origin as (scheme, host, port), the default port filled in; None otherwise
    (e.g. the "null" origin of sandboxed pages and files)."""
    parts = urlsplit(text.strip().rstrip("/"))
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def own_addresses() -> set[str]:
    """Every address of this machine's interfaces (IPv6 without a zone)."""
    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.add(entry.address.split("%")[0].lower())
    return addresses


@dataclass(frozen=True)
class OriginPolicy:
    """Which browser origins may open /ws.

    A browser sends ``Origin`` with every WebSocket handshake; a page of another site must not
    reach the server through its visitors' browsers. Allowed: the configured list, and the
    server's own origins, i.e. the address it is bound to on its port: with --host 127.0.0.1,
    http://127.0.0.1:PORT, http://localhost:PORT and http://[::1]:PORT (https:// with TLS); bound
    to every interface, each address of the machine and its host name. Never the request's
    ``Host`` header: after a DNS rebinding, evil.example resolves to the server and the page's
    origin and Host header agree. No Origin (a non-browser client) is allowed: tokens guard
    those.
    """

    origins: frozenset[Origin]
    allow_any: bool = False

    @classmethod
    def for_server(cls, host: str, port: int, tls: bool,
                   allow: Iterable[str] = ()) -> OriginPolicy:
        allow = tuple(allow)
        listed = set()
        for text in allow:
            if text == "*":
                continue
            key = _origin_key(text)
            if key is None:
                raise ConfigError(f"allowed origin {text!r}: an origin is scheme://host[:port], "
                                  "e.g. https://app.example")
            listed.add(key)
        if host in _WILDCARDS:
            names = {*own_addresses(), *_LOOPBACK_NAMES, socket.gethostname().lower()}
        elif is_loopback(host):
            names = {host.lower(), *_LOOPBACK_NAMES}
        else:
            names = {host.lower()}
        scheme = "https" if tls else "http"
        own = {(scheme, name, port) for name in names}
        return cls(origins=frozenset(own | listed), allow_any="*" in allow)

    def allows(self, origin: str | None) -> bool:
        if origin is None or self.allow_any:
            return True
        return _origin_key(origin) in self.origins


# ------------------------------------------------------------------------------------ files
_IMPORT = re.compile(
    r"""\b(?:import|export)\s*(?:[\w$*{},\s]*?\bfrom\s*)?["']([^"'\n]+)["']"""  # static
    r"""|\bimport\s*\(\s*["']([^"'\n]+)["']\s*\)"""  # dynamic import("...")
    r"""|\bnew\s+URL\(\s*["']([^"'\n]+)["']\s*,\s*import\.meta\.url"""  # worklets, workers
)
_HTML_REF = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_INLINE_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)


@dataclass(frozen=True)
class ViewerFiles:
    """The map URL path -> file of everything the server may send, made once by :meth:`scan`.

    Contents are read per request (edits show up at once); a file added later needs a restart.
    """

    files: Mapping[str, Path]
    csp: str = field(default_factory=lambda: viewer_csp(()))

    @property
    def paths(self) -> list[str]:
        return list(self.files)

    @classmethod
    def scan(cls, web_root: Path, assets_root: Path) -> ViewerFiles:
        """The viewer's own files (web_root's top level, :data:`VIEWER_SUFFIXES`), the files
        their imports reach (through the pages' import maps), :data:`RUNTIME_FILES`, and the
        face assets (:data:`ASSET_SUFFIXES`) under ``/assets``."""
        web_root = web_root.resolve()
        files: dict[str, Path] = {}
        hashes: set[str] = set()
        import_map: dict[str, str] = {}
        pending: list[str] = list(RUNTIME_FILES)
        for path in sorted(web_root.glob("*")):
            if path.suffix not in VIEWER_SUFFIXES or not path.is_file():
                continue
            pending.append("/" + path.name)
            if path.suffix == ".html":
                text = path.read_text("utf-8")
                for attrs, body in _INLINE_SCRIPT.findall(text):
                    if "src=" in attrs:
                        continue
                    digest = hashlib.sha256(body.encode("utf-8")).digest()
                    hashes.add(base64.b64encode(digest).decode())
                    if "importmap" in attrs:
                        import_map.update(json.loads(body).get("imports", {}))
                pending += [urljoin("/" + path.name, ref) for ref in _HTML_REF.findall(text)]
        seen: set[str] = set()
        while pending:
            url = pending.pop()
            if url in seen:
                continue
            seen.add(url)
            target = _file_under(web_root, url)
            if target is None:
                continue
            files[url] = target
            if target.suffix in (".js", ".mjs"):
                text = target.read_text("utf-8", errors="replace")
                for groups in _IMPORT.findall(text):
                    resolved = _resolve(next(g for g in groups if g), url, import_map)
                    if resolved is not None:
                        pending.append(resolved)
        if "/index.html" in files:
            files["/"] = files["/index.html"]
        assets_root = assets_root.resolve()
        if assets_root.is_dir():
            for path in sorted(assets_root.rglob("*")):
                if path.suffix.lower() in ASSET_SUFFIXES and path.is_file():
                    files["/assets/" + path.relative_to(assets_root).as_posix()] = path
        return cls(files=files, csp=viewer_csp(hashes))

    def lookup(self, path: str) -> Path | None:
        return self.files.get(path)

    def serve(self, path: str) -> Response:
        """GET of a decoded path: the file with the viewer's CSP, or 404."""
        found = self.lookup(path)
        if found is None:
            return text_response(HTTPStatus.NOT_FOUND, "not found")
        try:
            if found.stat().st_size > _MAX_FILE_BYTES:
                return text_response(HTTPStatus.FORBIDDEN, "file too large to serve")
            body = found.read_bytes()
        except OSError:  # removed since start-up
            return text_response(HTTPStatus.NOT_FOUND, "not found")
        content_type = _TYPES.get(found.suffix.lower(), "application/octet-stream")
        return response(HTTPStatus.OK, body, content_type, csp=self.csp)


def _resolve(specifier: str, importer: str, import_map: Mapping[str, str]) -> str | None:
    """The URL path a module ``specifier`` in ``importer`` (a URL path) loads: relative and
    absolute paths as the browser joins them, bare names through the import map (an exact key,
    else the longest "prefix/" key); None for other sites and unknown names."""
    if specifier.startswith(("/", "./", "../")):
        return urljoin(importer, specifier)
    if specifier in import_map:
        return urljoin("/", import_map[specifier])
    prefixes = [k for k in import_map if k.endswith("/") and specifier.startswith(k)]
    if prefixes:
        key = max(prefixes, key=len)
        return urljoin("/", import_map[key] + specifier[len(key):])
    return None


def _file_under(root: Path, url: str) -> Path | None:
    """The file of this site's URL path ``url`` under ``root``; None for another site, a
    folder, a missing file, or a path that leaves ``root``."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path.strip("/"):
        return None
    candidate = (root / unquote(parts.path).lstrip("/")).resolve()
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate
