// Protocol v1 (with the optional v1.1 additions: coefficient frames, ready.basis,
// ready.lookahead_ms) of diffusion-talker (DESIGN §7, PROTOCOL.md): the browser mirror of
// realtime/messages.py. Pure functions, no I/O: `encode(msg) -> Uint8Array`, `decode(bytes) -> msg`.
//
// Every WebSocket message is one msgpack map with a string `type`. A message is a plain object
// `{type, ...fields}`; decode() fills defaults, so callers never test for missing optional fields.
// Bad input of any kind raises ProtocolError (never a TypeError or a msgpack DecodeError).
//
// Encoding is written here rather than with @msgpack/msgpack's encoder because a float field must
// stay a float64 even when its value is integral (t = 0.0), or the bytes would differ from the
// Python side's; integers use the smallest msgpack form, as Python's msgpack does.

import { decode as msgpackDecode } from "@msgpack/msgpack";

export const PROTOCOL_VERSION = 1;
export const SAMPLE_RATE_MIN_HZ = 8000;
export const SAMPLE_RATE_MAX_HZ = 48000;
export const SAMPLE_RATE_STEP_HZ = 25; // every usual rate is a multiple (PROTOCOL.md §2)
export const MAX_AUDIO_SECONDS = 1.0;
export const ENCODINGS = Object.freeze(["pcm_s16le", "pcm_f32le"]);
export const AUDIO_TRANSPORTS = Object.freeze(["ws", "webrtc"]);
// Frame formats: absolute vertices ("f16", "f32"), or the model's coefficients ("coeffs", v1.1: K
// float16 a frame, applied by the viewer as morph targets: ~160 bytes a frame instead of ~16 KB).
export const FORMATS = Object.freeze(["f16", "f32", "coeffs"]);
export const BYTES_PER_SAMPLE = Object.freeze({ pcm_s16le: 2, pcm_f32le: 4 });
export const BYTES_PER_COORD = Object.freeze({ f16: 2, f32: 4 });

/** WebSocket close codes the server uses (DESIGN §7). */
export const CLOSE = Object.freeze({
  NORMAL: 1000,
  BAD_MESSAGE: 1003,
  BAD_TOKEN: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  SERVER_FULL: 1013,
});

/**
 * The one error type for bad protocol input. `code` is PROTOCOL.md §5's (bad_msgpack, not_a_map,
 * missing_field, bad_field_type, bad_value, unknown_type, unsupported_protocol, ...);
 * `closeCode` is what the peer closes with.
 */
export class ProtocolError extends Error {
  constructor(code, message, closeCode = CLOSE.BAD_MESSAGE) {
    super(`${code}: ${message}`);
    this.name = "ProtocolError";
    this.code = code;
    this.detail = message;
    this.closeCode = closeCode;
  }
}

// ---- field kinds -----------------------------------------------------------------------------
// Each kind checks the msgpack type of a decoded value (a boolean is never an int).
const KINDS = {
  int: ["an integer", (v) => Number.isInteger(v)],
  float: ["a number", (v) => typeof v === "number"],
  str: ["a string", (v) => typeof v === "string"],
  bin: ["binary (msgpack bin)", (v) => v instanceof Uint8Array],
  bool: ["a boolean", (v) => typeof v === "boolean"],
  strList: ["an array of strings", (v) => Array.isArray(v) && v.every((x) => typeof x === "string")],
  mesh: ["a map", (v) => isMap(v)],
  basis: ["a map", (v) => isMap(v)],
};

function wireType(v) {
  if (v === null || v === undefined) return "nil";
  if (typeof v === "boolean") return "a boolean";
  if (typeof v === "number") return Number.isInteger(v) ? "an integer" : "a float";
  if (typeof v === "string") return "a string";
  if (v instanceof Uint8Array) return "binary";
  if (Array.isArray(v)) return "an array";
  return isMap(v) ? "a map" : typeof v;
}

function isMap(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array) &&
    Object.getPrototypeOf(v) === Object.prototype;
}

// ---- message schemas (PROTOCOL.md §2, §3) ------------------------------------------------------
// [name, kind, presence]: REQUIRED must be on the wire; NULLABLE may be absent or nil (-> null,
// and left out when encoding); any other value is the default when absent or nil (§1: optional
// fields may be absent or nil).
const REQUIRED = Symbol("required");
const NULLABLE = Symbol("nullable");

const MESH_FIELDS = [
  ["vertex_count", "int", REQUIRED],
  ["template", "bin", REQUIRED],
  ["faces", "bin", REQUIRED],
];
// v1.1, only for hello.format "coeffs": vertices = template + sum_k coeffs[k] * vectors[k].
// `vectors` (K*V*3 f16) is absent when the basis is the facecap head's own blendshapes (the viewer
// has their morph targets in /assets/facecap.glb).
const BASIS_FIELDS = [
  ["names", "strList", REQUIRED],
  ["vectors", "bin", NULLABLE],
];
/** The fields of each nested map kind. */
const NESTED = { mesh: MESH_FIELDS, basis: BASIS_FIELDS };

/** Field order is the canonical wire order (PROTOCOL.md tables), `type` first. */
export const CLIENT_SCHEMAS = Object.freeze({
  hello: [
    ["protocol", "int", REQUIRED],
    ["sample_rate", "int", REQUIRED],
    ["encoding", "str", REQUIRED],
    ["audio", "str", "ws"],
    ["identity", "str", NULLABLE],
    ["format", "str", "f16"],
    ["weights", "bool", false],
    ["token", "str", NULLABLE],
  ],
  audio: [["data", "bin", REQUIRED]],
  offer: [["sdp", "str", REQUIRED]],
  identity: [["identity", "str", REQUIRED]],
  interrupt: [],
  end: [],
});

export const SERVER_SCHEMAS = Object.freeze({
  ready: [
    ["protocol", "int", REQUIRED],
    ["session", "str", REQUIRED],
    ["fps", "int", REQUIRED],
    ["identities", "strList", REQUIRED],
    ["identity", "str", REQUIRED],
    ["mesh", "mesh", REQUIRED],
    ["blendshapes", "strList", REQUIRED],
    ["lookahead_ms", "float", NULLABLE], // v1.1: audio the model waits for past a frame's time
    ["basis", "basis", NULLABLE], // v1.1: only when hello.format is "coeffs"
  ],
  answer: [["sdp", "str", REQUIRED]],
  frame: [
    ["seq", "int", REQUIRED],
    ["t", "float", REQUIRED],
    ["vertices", "bin", NULLABLE], // exactly one of vertices and coeffs (v1.1)
    ["weights", "bin", NULLABLE],
    ["latency_ms", "float", REQUIRED],
    ["coeffs", "bin", NULLABLE], // v1.1: K f16 in ready.basis.names order
  ],
  stats: [
    ["frames_sent", "int", REQUIRED],
    ["dropped_frames", "int", REQUIRED],
    ["skipped_hops", "int", REQUIRED],
    ["queue_depth", "int", REQUIRED],
    ["audio_received_s", "float", REQUIRED],
    ["latency_p50_ms", "float", NULLABLE],
    ["latency_p95_ms", "float", NULLABLE],
    ["latency_p99_ms", "float", NULLABLE],
  ],
  error: [
    ["code", "str", REQUIRED],
    ["message", "str", REQUIRED],
  ],
  end: [["frames", "int", REQUIRED]],
});

const SCHEMAS = { to_server: CLIENT_SCHEMAS, to_client: SERVER_SCHEMAS };

function buildFields(fields, map, prefix, what) {
  const out = {};
  for (const [name, kind, presence] of fields) {
    const has = Object.prototype.hasOwnProperty.call(map, name) && map[name] !== undefined;
    const value = has ? map[name] : undefined;
    if (!has || (value === null && presence !== REQUIRED)) {
      if (presence === REQUIRED) {
        throw new ProtocolError("missing_field", `${prefix ? `field '${prefix.slice(0, -1)}'` : `'${what}' message`} lacks required field '${prefix}${name}'`);
      }
      out[name] = presence === NULLABLE ? null : presence;
      continue;
    }
    const [expected, ok] = KINDS[kind];
    if (value === null) throw new ProtocolError("bad_field_type", `field '${prefix}${name}' must not be nil`);
    if (!ok(value)) throw new ProtocolError("bad_field_type", `field '${prefix}${name}' must be ${expected}, got ${wireType(value)}`);
    out[name] = NESTED[kind] ? buildFields(NESTED[kind], value, `${name}.`, what) : value;
  }
  return out;
}

const bad = (name, expected, got) => new ProtocolError("bad_value", `field '${name}' must be ${expected}, got ${JSON.stringify(got)}`);
function checkInt(name, v, lo, hi = null) {
  if (v < lo || (hi !== null && v > hi)) throw bad(name, hi !== null ? `an integer in ${lo}..${hi}` : `an integer >= ${lo}`, v);
}
function checkFloat(name, v, lo = 0) {
  if (!Number.isFinite(v) || v < lo) throw bad(name, `a finite number >= ${lo}`, Number.isNaN(v) ? "NaN" : v);
}
function checkChoice(name, v, choices) {
  if (!choices.includes(v)) throw bad(name, `one of ${choices.map((c) => `'${c}'`).join(", ")}`, v);
}
function checkNonEmpty(name, v) {
  if (!v) throw bad(name, "a non-empty string", v);
}
function checkProtocol(v) {
  if (v !== PROTOCOL_VERSION) throw new ProtocolError("unsupported_protocol", `field 'protocol' must be ${PROTOCOL_VERSION}, got ${v}`);
}

function checkBasis({ names, vectors }, vertexCount) {
  if (!names.length) throw bad("basis.names", "a non-empty array of strings", names);
  if (vectors === null) return;
  const k = names.length;
  if (vectors.length % (6 * k)) throw bad("basis.vectors", `a multiple of ${6 * k} bytes (K*V*3 float16)`, `${vectors.length} bytes`);
  if (vectors.length !== 6 * k * vertexCount) throw bad("basis.vectors", `${6 * k * vertexCount} bytes (K*V*3 float16)`, `${vectors.length} bytes`);
}

/** Value ranges (as the Python dataclasses' __post_init__). Throws ProtocolError("bad_value"). */
const CHECKS = {
  hello(m) {
    checkProtocol(m.protocol);
    checkInt("sample_rate", m.sample_rate, SAMPLE_RATE_MIN_HZ, SAMPLE_RATE_MAX_HZ);
    if (m.sample_rate % SAMPLE_RATE_STEP_HZ !== 0) {
      throw bad("sample_rate", `a multiple of ${SAMPLE_RATE_STEP_HZ} Hz (e.g. 16000, 22050, 44100, 48000)`, m.sample_rate);
    }
    checkChoice("encoding", m.encoding, ENCODINGS);
    checkChoice("audio", m.audio, AUDIO_TRANSPORTS);
    checkChoice("format", m.format, FORMATS);
    if (m.identity !== null) checkNonEmpty("identity", m.identity);
  },
  offer: (m) => checkNonEmpty("sdp", m.sdp),
  identity: (m) => checkNonEmpty("identity", m.identity),
  ready(m) {
    checkProtocol(m.protocol);
    checkNonEmpty("session", m.session);
    checkInt("fps", m.fps, 1, 240);
    checkNonEmpty("identity", m.identity);
    const { vertex_count: v, template, faces } = m.mesh;
    checkInt("mesh.vertex_count", v, 1);
    if (template.length !== 12 * v) throw bad("mesh.template", `${12 * v} bytes (vertex_count*3 float32)`, `${template.length} bytes`);
    if (faces.length % 12) throw bad("mesh.faces", "a multiple of 12 bytes (3 uint32 a triangle)", faces.length);
    const idx = u32FromBytes(faces, "mesh.faces");
    let max = -1;
    for (let i = 0; i < idx.length; i++) if (idx[i] > max) max = idx[i];
    if (max >= v) throw bad("mesh.faces", `vertex indices < ${v}`, max);
    if (m.lookahead_ms !== null) checkFloat("lookahead_ms", m.lookahead_ms);
    if (m.basis !== null) checkBasis(m.basis, v);
  },
  answer: (m) => checkNonEmpty("sdp", m.sdp),
  frame(m) {
    checkInt("seq", m.seq, 0);
    checkFloat("t", m.t);
    checkFloat("latency_ms", m.latency_ms);
    if ((m.vertices === null) === (m.coeffs === null)) throw bad("vertices", "present exactly when 'coeffs' is absent", m.coeffs !== null ? "both" : "neither");
    if (m.vertices !== null && (!m.vertices.length || m.vertices.length % 6)) throw bad("vertices", "a non-empty multiple of 6 bytes (V*3 f16 or f32)", `${m.vertices.length} bytes`);
    if (m.coeffs !== null && (!m.coeffs.length || m.coeffs.length % 2)) throw bad("coeffs", "a non-empty multiple of 2 bytes (K float16)", `${m.coeffs.length} bytes`);
    if (m.weights !== null && m.weights.length % 4) throw bad("weights", "a multiple of 4 bytes (float32)", `${m.weights.length} bytes`);
  },
  stats(m) {
    for (const n of ["frames_sent", "dropped_frames", "skipped_hops", "queue_depth"]) checkInt(n, m[n], 0);
    for (const n of ["audio_received_s", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]) if (m[n] !== null) checkFloat(n, m[n]);
  },
  error: (m) => checkNonEmpty("code", m.code),
  end(m) {
    if ("frames" in m) checkInt("frames", m.frames, 0);
  },
};

/** The direction a message object travels: `end` with `frames` is the server's. */
export function directionOf(msg) {
  if (msg.type === "end") return "frames" in msg && msg.frames !== undefined ? "to_client" : "to_server";
  return Object.prototype.hasOwnProperty.call(CLIENT_SCHEMAS, msg.type) ? "to_server" : "to_client";
}

/**
 * Check a decoded map (or a message object) and return the message: `type` plus every schema
 * field, defaults filled, nil optionals as null, unknown keys dropped. Throws ProtocolError.
 */
export function validate(map, direction = directionOf(map)) {
  if (!isMap(map)) throw new ProtocolError("not_a_map", `message must be a msgpack map, got ${wireType(map)}`);
  if (!Object.prototype.hasOwnProperty.call(map, "type")) throw new ProtocolError("missing_field", "message lacks the required field 'type'");
  if (typeof map.type !== "string") throw new ProtocolError("bad_field_type", `field 'type' must be a string, got ${wireType(map.type)}`);
  const table = SCHEMAS[direction];
  if (!table) throw new Error(`direction must be "to_server" or "to_client", got ${direction}`);
  if (!Object.prototype.hasOwnProperty.call(table, map.type)) {
    const side = direction === "to_server" ? "client" : "server";
    throw new ProtocolError("unknown_type", `unknown message type ${JSON.stringify(map.type)}; a ${side} sends one of ${Object.keys(table).join(", ")}`);
  }
  const msg = { type: map.type, ...buildFields(table[map.type], map, "", map.type) };
  CHECKS[msg.type]?.(msg);
  return msg;
}

// ---- decode ----------------------------------------------------------------------------------
/**
 * Bytes (Uint8Array | ArrayBuffer) of one WebSocket message -> message object.
 * `direction`: "to_client" (the browser decodes server messages) or "to_server".
 */
export function decode(bytes, { direction = "to_client" } = {}) {
  if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError("text_frame", "messages must be binary msgpack, not text");
  let raw;
  try {
    raw = msgpackDecode(bytes, { useBigInt64: false });
  } catch (err) {
    const trailing = /extra/i.test(err.message);
    throw new ProtocolError("bad_msgpack", trailing ? "message holds bytes after the first msgpack value" : `message is not valid msgpack (${err.message})`);
  }
  return validate(raw, direction);
}

// ---- encode ----------------------------------------------------------------------------------
/** Message object -> canonical msgpack bytes (PROTOCOL.md §1). Throws ProtocolError. */
export function encode(msg, direction = directionOf(msg)) {
  const m = validate(msg, direction);
  const present = SCHEMAS[direction][m.type].filter(([name]) => m[name] !== null);
  const w = new Writer();
  w.mapHeader(1 + present.length);
  w.str("type");
  w.str(m.type);
  for (const [name, kind] of present) {
    w.str(name);
    if (NESTED[kind]) {
      // Nested maps follow the same rule: nil optional fields are left out.
      const inner = NESTED[kind].filter(([mn]) => m[name][mn] !== null);
      w.mapHeader(inner.length);
      for (const [mn, mk] of inner) {
        w.str(mn);
        w.value(m[name][mn], mk);
      }
    } else {
      w.value(m[name], kind);
    }
  }
  return w.bytes();
}

const UTF8 = new TextEncoder();

/** A growable msgpack writer (big-endian, as msgpack is). */
class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.n = 0;
  }
  reserve(k) {
    if (this.n + k <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.n + k) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.n));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(x) { this.reserve(1); this.buf[this.n++] = x; }
  u16(x) { this.reserve(2); this.view.setUint16(this.n, x); this.n += 2; }
  u32(x) { this.reserve(4); this.view.setUint32(this.n, x); this.n += 4; }
  raw(bytes) { this.reserve(bytes.length); this.buf.set(bytes, this.n); this.n += bytes.length; }
  bytes() { return this.buf.slice(0, this.n); }

  mapHeader(len) {
    if (len < 16) this.u8(0x80 | len);
    else if (len < 0x10000) { this.u8(0xde); this.u16(len); }
    else { this.u8(0xdf); this.u32(len); }
  }
  arrayHeader(len) {
    if (len < 16) this.u8(0x90 | len);
    else if (len < 0x10000) { this.u8(0xdc); this.u16(len); }
    else { this.u8(0xdd); this.u32(len); }
  }
  str(s) {
    const b = UTF8.encode(s);
    if (b.length < 32) this.u8(0xa0 | b.length);
    else if (b.length < 0x100) { this.u8(0xd9); this.u8(b.length); }
    else if (b.length < 0x10000) { this.u8(0xda); this.u16(b.length); }
    else { this.u8(0xdb); this.u32(b.length); }
    this.raw(b);
  }
  bin(b) {
    if (b.length < 0x100) { this.u8(0xc4); this.u8(b.length); }
    else if (b.length < 0x10000) { this.u8(0xc5); this.u16(b.length); }
    else { this.u8(0xc6); this.u32(b.length); }
    this.raw(b);
  }
  f64(x) { this.u8(0xcb); this.reserve(8); this.view.setFloat64(this.n, x); this.n += 8; }
  int(x) {
    if (x >= 0) {
      if (x < 0x80) this.u8(x);
      else if (x < 0x100) { this.u8(0xcc); this.u8(x); }
      else if (x < 0x10000) { this.u8(0xcd); this.u16(x); }
      else if (x < 0x100000000) { this.u8(0xce); this.u32(x); }
      else { this.u8(0xcf); this.reserve(8); this.view.setBigUint64(this.n, BigInt(x)); this.n += 8; }
    } else if (x >= -32) this.u8(0xe0 | (x + 32));
    else if (x >= -0x80) { this.u8(0xd0); this.reserve(1); this.view.setInt8(this.n, x); this.n += 1; }
    else if (x >= -0x8000) { this.u8(0xd1); this.reserve(2); this.view.setInt16(this.n, x); this.n += 2; }
    else if (x >= -0x80000000) { this.u8(0xd2); this.reserve(4); this.view.setInt32(this.n, x); this.n += 4; }
    else { this.u8(0xd3); this.reserve(8); this.view.setBigInt64(this.n, BigInt(x)); this.n += 8; }
  }
  /** kind: a schema kind, or null for a free value (integral numbers as ints, others as float64). */
  value(v, kind) {
    if (v === null || v === undefined) return this.u8(0xc0);
    if (kind === "float") return this.f64(v);
    if (typeof v === "boolean") return this.u8(v ? 0xc3 : 0xc2);
    if (typeof v === "number") return Number.isSafeInteger(v) ? this.int(v) : this.f64(v);
    if (typeof v === "string") return this.str(v);
    if (v instanceof Uint8Array) return this.bin(v);
    if (Array.isArray(v)) {
      this.arrayHeader(v.length);
      for (const x of v) this.value(x, null);
      return undefined;
    }
    const keys = Object.keys(v);
    this.mapHeader(keys.length);
    for (const k of keys) {
      this.str(k);
      this.value(v[k], null);
    }
    return undefined;
  }
}

// ---- constructors for the messages the browser sends -----------------------------------------
export const hello = ({ sampleRate, encoding = "pcm_f32le", audio = "ws", identity = null, format = "f16", weights = false, token = null }) =>
  encode({ type: "hello", protocol: PROTOCOL_VERSION, sample_rate: sampleRate, encoding, audio, identity, format, weights, token });
export const audioMessage = (data) =>
  encode({ type: "audio", data: data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
export const offer = (sdp) => encode({ type: "offer", sdp });
export const identity = (name) => encode({ type: "identity", identity: name });
export const interrupt = () => encode({ type: "interrupt" });
export const end = () => encode({ type: "end" });

/** Throws ProtocolError when an audio payload breaks the hello's contract (≤ 1 s, whole samples). */
export function checkAudioPayload(data, { sampleRate, encoding }) {
  const size = BYTES_PER_SAMPLE[encoding];
  if (data.length % size !== 0) throw new ProtocolError("bad_audio", `audio.data: ${data.length} bytes is not whole ${encoding} samples`);
  if (data.length / size > sampleRate * MAX_AUDIO_SECONDS) {
    throw new ProtocolError("audio_too_long", `audio.data: ${data.length / size} samples is more than ${MAX_AUDIO_SECONDS} s at ${sampleRate} Hz`, CLOSE.TOO_BIG);
  }
}

// ---- binary payloads -------------------------------------------------------------------------
// Browsers and Node are little-endian on every platform we target, as the wire format is.

/** Little-endian f32 bytes -> Float32Array (copies only when the bytes are misaligned). */
export function f32FromBytes(bytes, where = "bytes") {
  if (bytes.length % 4 !== 0) throw new ProtocolError("bad_value", `${where}: ${bytes.length} bytes is not whole f32 values`);
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  return new Float32Array(bytes.slice().buffer);
}

/** Little-endian u32 bytes -> Uint32Array. */
export function u32FromBytes(bytes, where = "bytes") {
  if (bytes.length % 4 !== 0) throw new ProtocolError("bad_value", `${where}: ${bytes.length} bytes is not whole u32 values`);
  if (bytes.byteOffset % 4 === 0) return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  return new Uint32Array(bytes.slice().buffer);
}

let F16_TABLE = null;
/** The 65536 half floats as float32 (built once; Float16Array is not everywhere yet). */
function f16Table() {
  if (F16_TABLE) return F16_TABLE;
  F16_TABLE = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) F16_TABLE[h] = halfToFloat(h);
  return F16_TABLE;
}

/** One IEEE 754 binary16 (as a uint16) -> number. Handles subnormals, infinities and NaN. */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Little-endian f16 bytes -> Float32Array (a new array, or `out` when given). */
export function f16FromBytes(bytes, out = null, where = "bytes") {
  if (bytes.length % 2 !== 0) throw new ProtocolError("bad_value", `${where}: ${bytes.length} bytes is not whole f16 values`);
  const n = bytes.length / 2;
  const src = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice().buffer);
  const dst = out ?? new Float32Array(n);
  if (dst.length < n) throw new ProtocolError("bad_value", `${where}: output holds ${dst.length} values, need ${n}`);
  const table = f16Table();
  for (let i = 0; i < n; i++) dst[i] = table[src[i]];
  return dst;
}

/**
 * A frame's vertices as Float32Array (V*3), checked against the session's vertex count.
 * `format` is the hello's ("f16" | "f32"); `out` (optional) is reused to avoid garbage.
 */
export function frameVertices(frame, { format, vertexCount }, out = null) {
  if (!BYTES_PER_COORD[format]) throw new ProtocolError("bad_value", `frame.vertices: the hello asked for "${format}" frames, not vertices`);
  if (frame.vertices === null || frame.vertices === undefined) throw new ProtocolError("bad_value", `frame.vertices: absent (the hello asked for ${format} vertices)`);
  const expected = vertexCount * 3 * BYTES_PER_COORD[format];
  if (frame.vertices.length !== expected) {
    throw new ProtocolError("bad_value", `frame.vertices: expected ${expected} bytes (${vertexCount}*3 ${format}), got ${frame.vertices.length}`);
  }
  if (format === "f16") return f16FromBytes(frame.vertices, out, "frame.vertices");
  const v = f32FromBytes(frame.vertices, "frame.vertices");
  if (out) { out.set(v); return out; }
  return v;
}

/**
 * A coefficient frame's values (K f16 -> Float32Array, in `ready.basis.names` order), checked
 * against the basis size; `out` (optional) is reused.
 */
export function frameCoeffs(frame, count, out = null) {
  if (frame.coeffs === null || frame.coeffs === undefined) throw new ProtocolError("bad_value", "frame.coeffs: absent (the hello asked for coefficient frames)");
  if (frame.coeffs.length !== 2 * count) {
    throw new ProtocolError("bad_value", `frame.coeffs: expected ${count} values (${2 * count} bytes f16), got ${frame.coeffs.length} bytes`);
  }
  return f16FromBytes(frame.coeffs, out, "frame.coeffs");
}

/** `ready.basis.vectors` as Float32Array (K*V*3, target k at [k*V*3, (k+1)*V*3)), or null. */
export function basisVectors(basis) {
  if (!basis || basis.vectors === null || basis.vectors === undefined) return null;
  return f16FromBytes(basis.vectors, null, "ready.basis.vectors");
}

/** A frame's ARKit weights (f32, one per `ready.blendshapes` name), or null when absent. */
export function frameWeights(frame, blendshapeCount) {
  if (frame.weights === null || frame.weights === undefined) return null;
  const w = f32FromBytes(frame.weights, "frame.weights");
  if (blendshapeCount !== undefined && w.length !== blendshapeCount) {
    throw new ProtocolError("bad_value", `frame.weights: expected ${blendshapeCount} values, got ${w.length}`);
  }
  return w;
}
