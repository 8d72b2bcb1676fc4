"""Plain HTTP GETs on the server's one port: the viewer's files, the face asset and ``/health``.

Served through websockets' ``process_request`` hook, so no second HTTP framework is needed
(DESIGN §7). Only files under the configured roots are served; anything else is a 404.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".glb": "model/gltf-binary",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".wav": "audio/wav",
    ".msgpack": "application/msgpack",
}
_MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StaticRoots:
    """URL prefix -> folder. The longest matching prefix wins; '/' maps to the viewer."""

    mounts: tuple[tuple[str, Path], ...]
    index: str = "index.html"

    def resolve(self, url_path: str) -> Path | None:
        path = unquote(urlsplit(url_path).path)
        for prefix, root in sorted(self.mounts, key=lambda m: -len(m[0])):
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :].lstrip("/")
            candidate = (root / rel).resolve() if rel else (root / self.index).resolve()
            if candidate.is_dir():
                candidate = candidate / self.index
            root_resolved = root.resolve()
            if root_resolved != candidate and root_resolved not in candidate.parents:
                return None  # path traversal
            return candidate if candidate.is_file() else None
        return None


def response(status: HTTPStatus, body: bytes, content_type: str, **extra: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-cache"
    for key, value in extra.items():
        headers[key.replace("_", "-")] = value
    return Response(status.value, status.phrase, headers, body)


def json_response(payload: object, status: HTTPStatus = HTTPStatus.OK) -> Response:
    body = json.dumps(payload, indent=1, sort_keys=True).encode()
    return response(status, body, "application/json")


def text_response(status: HTTPStatus, text: str) -> Response:
    return response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def serve_file(roots: StaticRoots, url_path: str) -> Response:
    path = roots.resolve(url_path)
    if path is None:
        return text_response(HTTPStatus.NOT_FOUND, "not found")
    size = path.stat().st_size
    if size > _MAX_FILE_BYTES:
        return text_response(HTTPStatus.FORBIDDEN, "file too large to serve")
    content_type = _TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    return response(HTTPStatus.OK, path.read_bytes(), content_type)

