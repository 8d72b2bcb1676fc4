// node --test tests/web/ : the browser's protocol mirror (web_client/protocol.js) against the
// golden byte fixtures shared with realtime/protocol.py, plus its own exact behaviour.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as P from "../../web_client/protocol.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const FIXTURES = join(HERE, "..", "fixtures", "protocol");

// ---- golden fixtures -------------------------------------------------------------------------
// manifest.json (PROTOCOL.md §7): `fixtures` lists valid messages {name, file, direction,
// canonical, message} with binary values as {"$hex": "..."}; `invalid` lists rejected inputs
// {name, file, direction, error (the ProtocolError code), close_code}.
function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "$hex") return Uint8Array.from(Buffer.from(v.$hex, "hex"));
    if (keys.length === 1 && keys[0] === "$base64") return Uint8Array.from(Buffer.from(v.$base64, "base64"));
    return Object.fromEntries(keys.map((k) => [k, revive(v[k])]));
  }
  return v;
}

const haveFixtures = existsSync(join(FIXTURES, "manifest.json"));
const manifest = haveFixtures ? JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8")) : null;
const read = (file) => new Uint8Array(readFileSync(join(FIXTURES, file)));

test("golden fixtures: every file is described", { skip: !haveFixtures && `no fixtures at ${FIXTURES}` }, () => {
  assert.equal(manifest.protocol, P.PROTOCOL_VERSION);
  const listed = new Set([...manifest.fixtures, ...(manifest.invalid ?? [])].map((e) => e.file));
  for (const f of readdirSync(FIXTURES).filter((f) => f.endsWith(".msgpack"))) {
    assert.ok(listed.has(f), `${f} is not described in manifest.json`);
  }
});

test("golden fixtures: decode equals the manifest; canonical ones re-encode byte for byte", { skip: !haveFixtures }, () => {
  assert.ok(manifest.fixtures.length > 0);
  for (const e of manifest.fixtures) {
    const bytes = read(e.file);
    const expected = P.validate(revive(e.message), e.direction);
    const msg = P.decode(bytes, { direction: e.direction });
    assert.deepEqual(msg, expected, `${e.name}: decoded message`);
    if (e.canonical) {
      assert.deepEqual(Buffer.from(P.encode(msg, e.direction)), Buffer.from(bytes), `${e.name}: re-encoded bytes`);
    }
  }
});

test("golden fixtures: invalid messages raise the manifest's error code", { skip: !haveFixtures }, () => {
  for (const e of manifest.invalid ?? []) {
    assert.throws(() => P.decode(read(e.file), { direction: e.direction }), (err) => {
      assert.ok(err instanceof P.ProtocolError, `${e.name}: ${err}`);
      assert.equal(err.code, e.error, `${e.name}: ${err.message}`);
      assert.equal(err.closeCode, e.close_code ?? 1003, e.name);
      return true;
    });
  }
});

// ---- exact behaviour without fixtures --------------------------------------------------------
test("hello encodes to the documented msgpack bytes with defaults filled", () => {
  const bytes = P.hello({ sampleRate: 16000, encoding: "pcm_f32le" });
  const decoded = P.decode(bytes, { direction: "to_server" });
  assert.deepEqual(decoded, {
    type: "hello", protocol: 1, sample_rate: 16000, encoding: "pcm_f32le", audio: "ws",
    identity: null, format: "f16", weights: false, token: null,
  });
  // nil optionals (identity, token) are left out: 7 keys, fixmap 0x87, then "type" -> "hello".
  assert.deepEqual([...bytes.slice(0, 12)], [0x87, 0xa4, ...Buffer.from("type"), 0xa5, ...Buffer.from("hello")]);
  // sample_rate 16000 is a uint16 (0xcd 0x3e 0x80), as Python's msgpack writes it.
  assert.ok(Buffer.from(bytes).includes(Buffer.from([0xcd, 0x3e, 0x80])));
});

test("float fields stay float64 even when integral", () => {
  const frame = { type: "frame", seq: 0, t: 0, vertices: new Uint8Array(6), latency_ms: 12 };
  const bytes = Buffer.from(P.encode(frame));
  const tAt = bytes.indexOf(Buffer.from([0xa1, 0x74])); // "t"
  assert.equal(bytes[tAt + 2], 0xcb);
  assert.equal(bytes.readDoubleBE(tAt + 3), 0);
  const back = P.decode(bytes);
  assert.equal(back.t, 0);
  assert.equal(back.weights, null, "absent optional fields decode as null");
  assert.equal(bytes[0], 0x85, "and are left out when encoding");
});

test("integers use the smallest msgpack form", () => {
  const cases = [[0, [0x00]], [127, [0x7f]], [128, [0xcc, 0x80]], [65535, [0xcd, 0xff, 0xff]],
    [65536, [0xce, 0, 1, 0, 0]]];
  for (const [n, want] of cases) {
    const bytes = P.encode({ type: "end", frames: n });
    assert.deepEqual([...bytes.slice(-want.length)], want, `frames=${n}`);
  }
});

test("every message type round-trips", () => {
  const mesh = { vertex_count: 2, template: new Uint8Array(24), faces: new Uint8Array(12) };
  const client = [
    { type: "audio", data: new Uint8Array(640) },
    { type: "offer", sdp: "v=0\r\n" },
    { type: "identity", identity: "T03" },
    { type: "interrupt" },
    { type: "end" },
  ];
  const server = [
    { type: "end", frames: 301 },
    { type: "ready", protocol: 1, session: "s1", fps: 30, identities: ["a", "b"], identity: "a", mesh, blendshapes: ["jawOpen"], lookahead_ms: null, basis: null },
    { type: "ready", protocol: 1, session: "s1", fps: 30, identities: ["a"], identity: "a", mesh, blendshapes: [], lookahead_ms: 0,
      basis: { names: ["pc0", "pc1"], vectors: new Uint8Array(2 * 2 * 3 * 2) } },
    { type: "ready", protocol: 1, session: "s1", fps: 30, identities: ["a"], identity: "a", mesh, blendshapes: ["jawOpen"], lookahead_ms: 52.5,
      basis: { names: ["jawOpen"], vectors: null } },
    { type: "answer", sdp: "v=0\r\n" },
    { type: "frame", seq: 7, t: 0.2333, vertices: new Uint8Array(12), weights: new Uint8Array(8), latency_ms: 88.5, coeffs: null },
    { type: "frame", seq: 8, t: 0.2667, vertices: null, weights: null, latency_ms: 88.5, coeffs: new Uint8Array(102) },
    { type: "stats", frames_sent: 9, dropped_frames: 0, skipped_hops: 0, queue_depth: 1, audio_received_s: 0.3,
      latency_p50_ms: 80.5, latency_p95_ms: 120.25, latency_p99_ms: null },
    { type: "error", code: "server_full", message: "32 sessions already" },
  ];
  for (const m of client) assert.deepEqual(P.decode(P.encode(m), { direction: "to_server" }), m, m.type);
  for (const m of server) assert.deepEqual(P.decode(P.encode(m)), m, m.type);
});

test("bad input raises ProtocolError with PROTOCOL.md's codes", () => {
  const cases = [
    [new Uint8Array([0xc1]), "bad_msgpack"], // never-used msgpack byte
    [P.encode({ type: "end", frames: 1 }).slice(0, 3), "bad_msgpack"], // truncated
    [Uint8Array.from([...P.encode({ type: "end", frames: 1 }), 0x00]), "bad_msgpack"], // trailing bytes
    [new Uint8Array([0x93, 1, 2, 3]), "not_a_map"],
    [encodeRaw({ kind: "frame" }), "missing_field"],
    [encodeRaw({ type: 7 }), "bad_field_type"],
    [encodeRaw({ type: "hello" }), "unknown_type"], // a client message, received by the client
    [encodeRaw({ type: "answer" }), "missing_field"],
    [encodeRaw({ type: "answer", sdp: new Uint8Array(2) }), "bad_field_type"],
    [encodeRaw({ type: "answer", sdp: "" }), "bad_value"],
    [encodeRaw({ type: "frame", seq: 1.5, t: 0.1, vertices: new Uint8Array(6), latency_ms: 1 }), "bad_field_type"],
    [encodeRaw({ type: "frame", seq: 1, t: -0.5, vertices: new Uint8Array(6), latency_ms: 1 }), "bad_value"],
    [encodeRaw({ type: "frame", seq: 1, t: 0.5, vertices: new Uint8Array(4), latency_ms: 1 }), "bad_value"],
  ];
  for (const [bytes, code] of cases) {
    assert.throws(() => P.decode(bytes), (err) => err instanceof P.ProtocolError && err.code === code && err.closeCode === 1003, code);
  }
  assert.throws(() => P.decode("text"), (err) => err.code === "text_frame");
  const hellos = [
    [{ sampleRate: 96000 }, "bad_value"], [{ sampleRate: 16000, encoding: "mp3" }, "bad_value"],
    [{ sampleRate: 16000, format: "f64" }, "bad_value"], [{ sampleRate: 16000, audio: "udp" }, "bad_value"],
    [{ sampleRate: 16000, identity: "" }, "bad_value"],
  ];
  for (const [h, code] of hellos) assert.throws(() => P.hello(h), (err) => err.code === code, JSON.stringify(h));
  const v2 = encodeRaw({ type: "hello", protocol: 2, sample_rate: 16000, encoding: "pcm_f32le" });
  assert.throws(() => P.decode(v2, { direction: "to_server" }), (e) => e.code === "unsupported_protocol");
  // Unknown keys are ignored; integers are accepted for float fields.
  const frame = P.decode(encodeRaw({ type: "frame", seq: 2, t: 1, vertices: new Uint8Array(6), latency_ms: 5, extra: "x" }));
  assert.deepEqual(Object.keys(frame), ["type", "seq", "t", "vertices", "weights", "latency_ms", "coeffs"]);
});

test("ready checks mesh sizes", () => {
  const ready = (template, faces) => ({ type: "ready", protocol: 1, session: "s", fps: 30, identities: [], identity: "x",
    mesh: { vertex_count: 2, template, faces }, blendshapes: [] });
  assert.throws(() => P.encode(ready(new Uint8Array(20), new Uint8Array(12))), /template/);
  assert.throws(() => P.encode(ready(new Uint8Array(24), new Uint8Array(10))), /faces/);
  assert.throws(() => P.encode(ready(new Uint8Array(24), new Uint8Array(Uint32Array.of(0, 1, 2).buffer))), /vertex indices < 2/);
});

// ---- v1.1: coefficient frames, ready.basis, ready.lookahead_ms ---------------------------------
test("hello asks for coefficient frames", () => {
  const msg = P.decode(P.hello({ sampleRate: 16000, format: "coeffs" }), { direction: "to_server" });
  assert.equal(msg.format, "coeffs");
  assert.deepEqual(P.FORMATS, ["f16", "f32", "coeffs"]);
});

test("a frame carries exactly one of vertices and coeffs", () => {
  const base = { type: "frame", seq: 1, t: 0.5, latency_ms: 1.5 };
  const cases = [
    [{ ...base, vertices: new Uint8Array(6), coeffs: new Uint8Array(2) }, /field 'vertices' must be present exactly when 'coeffs' is absent, got "both"/],
    [base, /got "neither"/],
    [{ ...base, coeffs: new Uint8Array(3) }, /field 'coeffs' must be a non-empty multiple of 2 bytes \(K float16\), got "3 bytes"/],
    [{ ...base, coeffs: new Uint8Array(0) }, /'coeffs'/],
  ];
  for (const [m, words] of cases) {
    assert.throws(() => P.decode(encodeRaw(m)), (e) => e instanceof P.ProtocolError && e.code === "bad_value" && words.test(e.message), String(words));
  }
  // Canonical order: coeffs comes last (after latency_ms), vertices and weights are left out.
  const bytes = P.encode({ ...base, coeffs: new Uint8Array(4) });
  assert.equal(bytes[0], 0x85);
  const text = Buffer.from(bytes).toString("latin1");
  assert.ok(text.indexOf("latency_ms") < text.indexOf("coeffs") && !text.includes("vertices"));
});

test("ready checks basis names and vector sizes, and lookahead_ms", () => {
  const ready = (extra) => ({ type: "ready", protocol: 1, session: "s", fps: 30, identities: [], identity: "x",
    mesh: { vertex_count: 2, template: new Uint8Array(24), faces: new Uint8Array(0) }, blendshapes: [], ...extra });
  const ok = P.decode(P.encode(ready({ basis: { names: ["a", "b"], vectors: new Uint8Array(24) } })));
  assert.equal(ok.basis.vectors.length, 24);
  assert.equal(ok.lookahead_ms, null);
  const cases = [
    [{ basis: { names: [] } }, "bad_value", /'basis.names' must be a non-empty array of strings/],
    [{ basis: { names: ["a", "b"], vectors: new Uint8Array(30) } }, "bad_value", /'basis.vectors' must be a multiple of 12 bytes \(K\*V\*3 float16\)/],
    [{ basis: { names: ["a", "b"], vectors: new Uint8Array(36) } }, "bad_value", /'basis.vectors' must be 24 bytes \(K\*V\*3 float16\), got "36 bytes"/],
    [{ basis: { vectors: new Uint8Array(24) } }, "missing_field", /field 'basis' lacks required field 'basis.names'/],
    [{ basis: { names: "a" } }, "bad_field_type", /'basis.names' must be an array of strings/],
    [{ basis: ["a"] }, "bad_field_type", /'basis' must be a map/],
    [{ lookahead_ms: -1 }, "bad_value", /'lookahead_ms' must be a finite number >= 0/],
    [{ lookahead_ms: "52" }, "bad_field_type", /'lookahead_ms' must be a number/],
  ];
  for (const [extra, code, words] of cases) {
    assert.throws(() => P.encode(ready(extra)), (e) => e instanceof P.ProtocolError && e.code === code && words.test(e.message), String(words));
  }
  // A basis without vectors is written without the key (nested maps leave nil out too).
  const bytes = Buffer.from(P.encode(ready({ basis: { names: ["jawOpen"], vectors: null } })));
  assert.ok(bytes.includes(Buffer.from("basis")) && !bytes.includes(Buffer.from("vectors")));
});

test("frameCoeffs and basisVectors read f16 and check the basis size", () => {
  const coeffs = new Uint8Array(Uint16Array.from([0x3800, 0xbc00, 0x0000]).buffer); // 0.5, -1, 0
  const frame = { vertices: null, coeffs };
  assert.deepEqual(P.frameCoeffs(frame, 3), new Float32Array([0.5, -1, 0]));
  const out = new Float32Array(3);
  assert.equal(P.frameCoeffs(frame, 3, out), out);
  assert.throws(() => P.frameCoeffs(frame, 2), (e) => e.code === "bad_value" && /expected 2 values/.test(e.message));
  assert.throws(() => P.frameCoeffs({ vertices: new Uint8Array(6), coeffs: null }, 3), P.ProtocolError);
  assert.throws(() => P.frameVertices(frame, { format: "f16", vertexCount: 1 }), P.ProtocolError);
  assert.throws(() => P.frameVertices({ vertices: new Uint8Array(6) }, { format: "coeffs", vertexCount: 1 }), P.ProtocolError);
  assert.equal(P.basisVectors({ names: ["a"], vectors: null }), null);
  assert.deepEqual(P.basisVectors({ names: ["a"], vectors: coeffs }), new Float32Array([0.5, -1, 0]));
});

test("golden fixtures: the coefficient frame is the vertex frame through the basis", { skip: !haveFixtures }, () => {
  // frame_coeffs applied to ready_basis_vectors gives frame_f32's vertices (PROTOCOL.md v1.1).
  const ready = P.decode(read("ready_basis_vectors.msgpack"));
  const coeffs = P.frameCoeffs(P.decode(read("frame_coeffs.msgpack")), ready.basis.names.length);
  const vectors = P.basisVectors(ready.basis);
  const v = ready.mesh.vertex_count;
  const vertices = Float32Array.from(P.f32FromBytes(ready.mesh.template));
  coeffs.forEach((c, k) => { for (let i = 0; i < 3 * v; i++) vertices[i] += c * vectors[k * 3 * v + i]; });
  const expected = P.frameVertices(P.decode(read("frame_f32.msgpack")), { format: "f32", vertexCount: v });
  assert.deepEqual(vertices, expected);
});

test("audio payloads: at most 1 s and whole samples", () => {
  P.checkAudioPayload(new Uint8Array(16000 * 4), { sampleRate: 16000, encoding: "pcm_f32le" });
  assert.throws(() => P.checkAudioPayload(new Uint8Array(16001 * 2), { sampleRate: 16000, encoding: "pcm_s16le" }), (e) => e.code === "audio_too_long" && e.closeCode === 1009);
  assert.throws(() => P.checkAudioPayload(new Uint8Array(3), { sampleRate: 16000, encoding: "pcm_s16le" }), (e) => e.code === "bad_audio");
});

test("f16 decoding matches IEEE binary16, including subnormals and specials", () => {
  const cases = [[0x0000, 0], [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
    [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14], [0x7c00, Infinity], [0xfc00, -Infinity]];
  const bytes = new Uint8Array(cases.length * 2);
  cases.forEach(([h], i) => { bytes[2 * i] = h & 0xff; bytes[2 * i + 1] = h >> 8; });
  const out = P.f16FromBytes(bytes);
  cases.forEach(([h, want], i) => assert.equal(out[i], want, `0x${h.toString(16)}`));
  assert.ok(Number.isNaN(P.halfToFloat(0x7e00)));
  assert.ok(Object.is(P.halfToFloat(0x8000), -0));
  // Misaligned input (a subarray at an odd offset) decodes the same.
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  assert.deepEqual(P.f16FromBytes(shifted.subarray(1)), out);
});

test("frameVertices reads f16 and f32 frames and checks the vertex count", () => {
  const xyz = new Float32Array([0.5, -0.25, 0.125, 1, 2, -3]);
  const f32 = { vertices: new Uint8Array(xyz.buffer) };
  assert.deepEqual(P.frameVertices(f32, { format: "f32", vertexCount: 2 }), xyz);
  const halves = Uint16Array.from([0x3800, 0xb400, 0x3000, 0x3c00, 0x4000, 0xc200]);
  const f16 = { vertices: new Uint8Array(halves.buffer) };
  assert.deepEqual(P.frameVertices(f16, { format: "f16", vertexCount: 2 }), xyz);
  assert.throws(() => P.frameVertices(f16, { format: "f16", vertexCount: 3 }), P.ProtocolError);
  const out = new Float32Array(6);
  assert.equal(P.frameVertices(f16, { format: "f16", vertexCount: 2 }, out), out);
});

// A raw msgpack map writer for malformed messages that encode() would refuse to write.
function encodeRaw(obj) {
  const parts = [0x80 | Object.keys(obj).length];
  const str = (s) => { const b = Buffer.from(s); parts.push(0xa0 | b.length, ...b); };
  for (const [k, v] of Object.entries(obj)) {
    str(k);
    if (typeof v === "string") str(v);
    else if (v instanceof Uint8Array) parts.push(0xc4, v.length, ...v);
    else if (Number.isInteger(v) && v >= 0 && v < 0x80) parts.push(v);
    else if (Number.isInteger(v) && v < 0x10000) parts.push(0xcd, v >> 8, v & 0xff);
    else { const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(v, 1); parts.push(...b); }
  }
  return Uint8Array.from(parts);
}
