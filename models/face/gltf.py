"""A small reader for binary glTF (.glb) files, enough for the facecap head.

Supports what ``gltfpack`` writes: the GLB container (JSON + BIN chunks), accessors with or without
``byteStride``, ``normalized`` integer components (KHR_mesh_quantization), bufferViews compressed
with EXT_meshopt_compression (modes ATTRIBUTES / TRIANGLES / INDICES, filters NONE / OCTAHEDRAL /
QUATERNION / EXPONENTIAL, decoded with the ``meshoptimizer`` package) and node TRS / matrix
transforms. Sparse accessors, external URIs and data URIs are not supported: they raise DataError.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

from models.errors import DataError

_GLB_MAGIC = 0x46546C67  # b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942

_COMPONENT_DTYPES: dict[int, np.dtype] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}




@dataclass
class Glb:
    """A parsed GLB: its JSON document, its BIN chunk and the bufferViews decoded so far."""

    doc: dict
    bin: bytes
    _views: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> Glb:
        if len(data) < 20:
            raise DataError(f"too short for a GLB ({len(data)} bytes)")
        magic, version, length = struct.unpack_from("<III", data, 0)
        if magic != _GLB_MAGIC or version != 2:
            raise DataError("not a glTF 2.0 binary (bad magic or version)")
        if length > len(data):
            raise DataError(f"truncated GLB: header says {length} bytes, file has {len(data)}")
        doc, binary, offset = None, b"", 12
        while offset + 8 <= length:
            chunk_len, chunk_type = struct.unpack_from("<II", data, offset)
            chunk = data[offset + 8 : offset + 8 + chunk_len]
            if len(chunk) != chunk_len:
                raise DataError("truncated GLB chunk")
            if chunk_type == _CHUNK_JSON:
                doc = json.loads(chunk.decode("utf-8"))
            elif chunk_type == _CHUNK_BIN and not binary:
                binary = bytes(chunk)
            offset += 8 + chunk_len
        if doc is None:
            raise DataError("GLB has no JSON chunk")
        return cls(doc=doc, bin=binary)

    # ---- buffers -------------------------------------------------------------------------------
    def _buffer(self, index: int) -> bytes:
        buf = self.doc["buffers"][index]
        if "uri" in buf:
            raise DataError("external or data-URI buffers are not supported")
        if index != 0:
            # Only a meshopt *fallback* buffer may lack data; reading it directly is an error.
            raise DataError(f"buffer {index} has no data (meshopt fallback buffer?)")
        return self.bin

    def buffer_view(self, index: int) -> bytes:
        """The (decompressed) bytes of bufferView ``index``."""
        if index not in self._views:
            view = self.doc["bufferViews"][index]
            ext = view.get("extensions", {}).get("EXT_meshopt_compression")
            if ext is not None:
                data = _decode_meshopt_view(ext, self._buffer(ext["buffer"]))
            else:
                start = view.get("byteOffset", 0)
                data = self._buffer(view["buffer"])[start : start + view["byteLength"]]
                if len(data) != view["byteLength"]:
                    raise DataError(f"bufferView {index} runs past the end of its buffer")
            self._views[index] = data
        return self._views[index]

    def accessor(self, index: int, normalize: bool = True) -> np.ndarray:
        """Accessor ``index`` as an array of shape (count, n) (or (count,) for SCALAR).

        Integer ``normalized`` accessors become float32 in [-1, 1] / [0, 1] when ``normalize``;
        other integer accessors keep their integer dtype (the caller applies node scales).
        """
        acc = self.doc["accessors"][index]
        if "sparse" in acc:
            raise DataError("sparse accessors are not supported")
        dtype = _COMPONENT_DTYPES[acc["componentType"]]
        n = _TYPE_SIZES[acc["type"]]
        count = acc["count"]
        if "bufferView" not in acc:
            out = np.zeros((count, n), dtype=dtype)
        else:
            view = self.doc["bufferViews"][acc["bufferView"]]
            data = self.buffer_view(acc["bufferView"])
            elem = dtype.itemsize * n
            stride = view.get("byteStride", elem)
            start = acc.get("byteOffset", 0)
            need = start + (count - 1) * stride + elem if count else 0
            if need > len(data):
                raise DataError(f"accessor {index} runs past the end of its bufferView")
            raw = np.frombuffer(data, dtype=np.uint8, count=max(need - start, 0), offset=start)
            rows = np.lib.stride_tricks.as_strided(raw, shape=(count, elem), strides=(stride, 1))
            out = np.ascontiguousarray(rows).view(dtype).reshape(count, n)
        if normalize and acc.get("normalized", False):
            out = _dequantize(out)
        return out[:, 0] if n == 1 else out

    # ---- scene graph ---------------------------------------------------------------------------
    def node_local_matrix(self, index: int) -> np.ndarray:
        """(4, 4) float64 local transform of a node (its ``matrix``, or T @ R @ S)."""
        node = self.doc["nodes"][index]
        if "matrix" in node:
            return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
        t = np.eye(4)
        t[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
        r = np.eye(4)
        r[:3, :3] = quat_to_matrix(node.get("rotation", [0.0, 0.0, 0.0, 1.0]))
        s = np.diag([*node.get("scale", [1.0, 1.0, 1.0]), 1.0])
        return t @ r @ s

    def node_parents(self) -> dict[int, int]:
        return {
            c: i for i, n in enumerate(self.doc.get("nodes", [])) for c in n.get("children", [])
        }

    def node_world_matrix(self, index: int) -> np.ndarray:
        """(4, 4) float64 transform from the node's space to the scene: parents applied last."""
        parents = self.node_parents()
        m = self.node_local_matrix(index)
        seen = {index}
        while index in parents:
            index = parents[index]
            if index in seen:
                raise DataError("cycle in the node hierarchy")
            seen.add(index)
            m = self.node_local_matrix(index) @ m
        return m


def quat_to_matrix(q) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _dequantize(a: np.ndarray) -> np.ndarray:
    """glTF normalized integers -> float32 (signed: max(c / MAX, -1); unsigned: c / MAX)."""
    info = np.iinfo(a.dtype)
    out = a.astype(np.float32) / np.float32(info.max)
    return np.maximum(out, -1.0) if info.min < 0 else out


def _decode_meshopt_view(ext: dict, source: bytes) -> bytes:
    """Decode one EXT_meshopt_compression bufferView to its ``count * byteStride`` raw bytes."""
    import meshoptimizer  # a setup-time dependency only; imported here so readers need not have it

    start, length = ext.get("byteOffset", 0), ext["byteLength"]
    encoded = np.frombuffer(source, dtype=np.uint8, count=length, offset=start)
    count, stride, mode = ext["count"], ext["byteStride"], ext["mode"]
    try:
        if mode == "ATTRIBUTES":
            out = meshoptimizer.decode_vertex_buffer(
                count, stride, encoded, dtype=np.dtype((np.void, stride))
            )
            raw = out.view(np.uint8).reshape(-1)
        elif mode in ("TRIANGLES", "INDICES"):
            decode = (
                meshoptimizer.decode_index_buffer
                if mode == "TRIANGLES"
                else meshoptimizer.decode_index_sequence
            )
            # The binding always allocates uint32 but the C decoder writes ``stride``-byte indices.
            raw = decode(count, stride, encoded).view(np.uint8)[: count * stride]
        else:
            raise DataError(f"unknown meshopt mode {mode!r}")
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"meshopt decoding failed: {exc}") from exc
    raw = np.ascontiguousarray(raw)
    flt = ext.get("filter", "NONE")
    if flt == "OCTAHEDRAL":
        raw = meshoptimizer.decode_filter_oct(raw, count, stride)
    elif flt == "QUATERNION":
        raw = meshoptimizer.decode_filter_quat(raw, count, stride)
    elif flt == "EXPONENTIAL":
        raw = meshoptimizer.decode_filter_exp(raw, count, stride)
    elif flt != "NONE":
        raise DataError(f"unknown meshopt filter {flt!r}")
    return raw.tobytes()
