// The viewer page: wires the face, the /ws session, the audio sources, the controls and the HUD.
//
// URL parameters:
//   ?token=T            sent in hello (the server closes with 1008 when it is wrong)
//   ?identity=NAME      talking style for hello ("auto" = picked from the voice)
//   ?autostart=mic|webrtc|ws|file   start without a click (mic = WebRTC when available, else ws)
//   ?src=URL            the audio file for autostart=file
//   ?drive=coeffs       (the default) coefficient frames (hello format "coeffs", ~160 bytes a
//                       frame), applied as morph targets on the GPU
//   ?drive=vertices     vertex frames (~16 KB a frame), positions replaced every frame
//   ?drive=weights      vertex frames with ARKit weights driving the glTF's morph targets
//   ?format=f32         vertex format for the vertex drives (default f16; f16/f32 alone means
//                       ?drive=vertices; ?format=coeffs means ?drive=coeffs)
//   ?ws=URL             WebSocket URL (default: this page's host, /ws)
//   ?delay_ms=N         fixed playout delay for file playback (default: from the first frame)
//   ?asset=URL          face asset (default /assets/facecap.glb)
// Test hook: window.__talker (see `hook` below).

import * as P from "./protocol.js";
import { FaceView } from "./face.js";
import { Session, describeClose, defaultWsUrl } from "./session.js";
import { PlayoutBuffer, FrameCounter, SlidingWindow, ByteRate, backoffDelayMs, choosePlayoutDelayS } from "./playout.js";
import {
  AudioSourceError, FilePlayer, LevelMeter, WebRtcSender, WorkletCapture, f32Bytes, openMicrophone, webrtcAvailable, FILE_SEND_RATE_HZ,
} from "./audio.js";

const params = new URLSearchParams(window.location.search);
const DRIVES = ["coeffs", "vertices", "weights"];

/** What drives the face: ?drive= when valid, else vertices when ?format= names a vertex format. */
function chooseDrive(drive, format) {
  if (DRIVES.includes(drive)) return drive;
  if (format === "f16" || format === "f32") return "vertices";
  return "coeffs";
}

const config = Object.freeze({
  token: params.get("token"),
  identity: params.get("identity"),
  autostart: params.get("autostart"),
  src: params.get("src"),
  drive: chooseDrive(params.get("drive"), params.get("format")),
  vertexFormat: params.get("format") === "f32" ? "f32" : "f16", // for the vertex drives
  wsUrl: params.get("ws") || defaultWsUrl(),
  delayMs: params.has("delay_ms") ? Number(params.get("delay_ms")) : null,
  asset: params.get("asset") ?? "/assets/facecap.glb",
});

const HISTORY_MAX = 6000; // entries kept in the hook's histories (~3 min at 30 fps)
const LATENCY_WINDOW = 150; // frames (~5 s) for the HUD's percentiles
const WEBRTC_SAMPLE_RATE_HZ = 48000; // what the browser's Opus track carries
const FIRST_FRAME_WAIT_S = 1.5; // file playback starts by then even if no frame has come
const MIC_QUEUE_MAX_S = 5; // PCM captured before `ready` is held (not dropped) up to this

const $ = (id) => document.getElementById(id);
const ui = {
  stage: $("stage"), canvas: $("face"), banner: $("banner"), faceNote: $("face-note"),
  pill: $("conn-pill"), dot: $("hud-dot"), state: $("hud-state"),
  latency: $("hud-latency"), serverLatency: $("hud-server-latency"), fps: $("hud-fps"), frames: $("hud-frames"), av: $("hud-av"), level: $("hud-level"), rate: $("hud-rate"),
  identity: $("identity"), transport: $("transport"), drive: $("drive"),
  mic: $("btn-mic"), fileLabel: $("btn-file-label"), fileInput: $("file-input"), stop: $("btn-stop"), interrupt: $("btn-interrupt"),
  metaSession: $("meta-session"), metaFace: $("meta-face"), metaSource: $("meta-source"),
};

/** What an end-to-end test reads. Histories are bounded (oldest dropped). */
const hook = {
  version: 1,
  config,
  state: "starting", // starting | offline | online | connecting | streaming | reconnecting | ending | error
  message: null, // the banner's text
  source: null, // null | "webrtc" | "ws" | "file"
  session: null, identity: null, identities: [], fps: null, vertexCount: null,
  format: null, // what the hello asked for: "coeffs" | "f16" | "f32"
  basis: null, // coefficient frames: {names, vectors (whether ready.basis had them)}
  lookaheadMs: null, // ready.lookahead_ms
  bytesReceived: 0, // every message of every run (sizes of the WebSocket messages)
  bytesPerS: null, // the HUD's "received": bytes per second over the last 2 s
  fallback: null, // why coefficient frames were given up for vertices, if they were
  assetLoaded: null, // true | false once tried
  faceSource: "none", // "gltf" | "template+gltf" | "template" | "none"
  framesReceived: 0, framesShown: 0, drops: 0, lateFrames: 0,
  lastFrame: null, // {seq, t, latency_ms, receivedAt (performance.now ms), hasWeights, kind: "coeffs" | "vertices", bytes}
  latency: { p50: null, p95: null }, // ms, over the last LATENCY_WINDOW frames
  serverStats: null, // the last `stats` message
  playoutDelayMs: null, // file playback: audio is heard this long after it is sent
  lipSpread: [], // every frame received: {seq, t, mouth (m, lip-centre distance; null if unknown), motion (mm RMS from template), latencyMs, receivedAt}
  micLevel: [], // microphone sources, every 50 ms: {at (performance.now ms), db (RMS dBFS)}
  rtcState: null, // the WebRTC peer connection's state (webrtc source)
  shownSeq: null, // seq of the frame on screen
  shownMouth: null, // lip-centre distance (m) of the face as drawn, read back from the shown mesh
  pixelRatio: null, // set when the display was too slow and the resolution was lowered
  renderMs: null, // average time to submit one render
  avSync: [], // file playback, per shown frame: {seq, t, clock (media time heard then), wallClock, offsetMs = (clock - t) * 1000, buffered}
  errors: [], // `error` messages and local failures {code, message}
  closes: [], // {code, reason, error}
  ended: null, // the server's `end` message
  start: (mode, arrayBuffer) => app.start(mode, arrayBuffer),
  stop: () => app.stop(),
  interrupt: () => app.interrupt(),
  setIdentity: (name) => app.setIdentity(name),
  snapshot: (step) => app.face.snapshot(step), // the canvas drawn now, as grey levels
};
window.__talker = hook;

function pushBounded(list, item) {
  list.push(item);
  if (list.length > HISTORY_MAX) list.splice(0, list.length - HISTORY_MAX);
}

class App {
  constructor() {
    this.face = new FaceView(ui.canvas);
    this.face.setMode(config.drive);
    this.assetLoaded = null; // the face asset's loading promise
    this.run = null; // the active source + session
    this.audioCtx = null; // for file playback; created in a click handler
    this.meshKey = null; // the {template, names, vectors} the face was built from
    this.healthAttempt = 0;
    this.healthTimer = null;
    this.defaultIdentity = null;
  }

  // ---- start-up -------------------------------------------------------------------------------
  async init() {
    this.bindControls();
    if (config.identity) this.setIdentity(config.identity);
    this.setState("starting");
    ui.faceNote.textContent = "loading face…";
    ui.faceNote.hidden = false;
    const assetPromise = this.assetLoaded = this.face.loadAsset(config.asset).then((ok) => {
      hook.assetLoaded = ok;
      this.updateFaceMeta();
      if (!ok && !this.face.template) ui.faceNote.textContent = "face asset not available — the face appears when the server is reached";
      else if (ok || this.face.template) ui.faceNote.hidden = true;
    });
    this.probeHealth();
    this.loop();
    setInterval(() => this.updateHud(), 250);
    if (config.autostart) {
      await Promise.race([assetPromise, new Promise((r) => setTimeout(r, 3000))]);
      this.autostart();
    }
  }

  async autostart() {
    const mode = config.autostart;
    if (mode === "file") {
      if (!config.src) return this.fail("autostart=file needs ?src=URL of an audio file");
      try {
        const res = await fetch(config.src);
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        return this.start("file", await res.arrayBuffer());
      } catch (err) {
        return this.fail(`could not fetch ${config.src}: ${err.message}`);
      }
    }
    if (["mic", "webrtc", "ws"].includes(mode)) return this.start(mode);
    return this.fail(`unknown autostart=${mode} (use mic, webrtc, ws or file)`);
  }

  /** GET /health while no session runs: online/offline, and identities when it lists them. */
  async probeHealth() {
    clearTimeout(this.healthTimer);
    if (this.run) return;
    try {
      const res = await fetch("/health", { cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const info = await res.json().catch(() => ({}));
      if (Array.isArray(info.identities)) this.fillIdentities(info.identities, info.identity ?? null);
      this.healthAttempt = 0;
      // An error stays on screen (state and banner) until the user starts again.
      if (!this.run && hook.state !== "error") this.setState("online");
      this.healthTimer = setTimeout(() => this.probeHealth(), 10000);
    } catch {
      if (!this.run) this.setState("offline");
      this.healthTimer = setTimeout(() => this.probeHealth(), backoffDelayMs(this.healthAttempt++, { baseMs: 1000, maxMs: 15000 }));
    }
  }

  bindControls() {
    ui.mic.addEventListener("click", () => (this.run ? this.stop() : this.start("mic")));
    ui.fileLabel.addEventListener("click", () => this.ensureAudioContext());
    ui.fileInput.addEventListener("change", async () => {
      const file = ui.fileInput.files?.[0];
      ui.fileInput.value = "";
      if (file) this.start("file", await file.arrayBuffer(), file.name);
    });
    ui.stop.addEventListener("click", () => this.stop());
    ui.interrupt.addEventListener("click", () => this.interrupt());
    ui.identity.addEventListener("change", () => this.setIdentity(ui.identity.value));
    ui.drive.value = config.drive;
    ui.drive.addEventListener("change", () => {
      const run = this.run;
      const coeffs = ui.drive.value === "coeffs";
      if (!run) {
        this.face.setMode(ui.drive.value);
      } else if (coeffs !== (run.format === "coeffs")) {
        this.banner(`This session streams ${run.format === "coeffs" ? "coefficients" : "vertices"}: the choice applies from the next start.`, "warn");
      } else if (ui.drive.value === "weights" && !run.weights) {
        this.banner("ARKit weights were not requested for this session: they apply from the next start.", "warn");
      }
      this.updateFaceMeta();
    });
    if (!webrtcAvailable()) ui.transport.value = "ws";
  }

  ensureAudioContext() {
    if (!this.audioCtx) this.audioCtx = new AudioContext({ latencyHint: "interactive" });
    return this.audioCtx.resume().catch(() => {}).then(() => this.audioCtx);
  }

  // ---- runs -----------------------------------------------------------------------------------
  /** mode: "mic" | "webrtc" | "ws" | "file" (with the file's bytes). */
  async start(mode, arrayBuffer = null, label = null) {
    if (this.run) await this.stop();
    clearTimeout(this.healthTimer);
    this.banner(null);
    if (mode === "mic") mode = ui.transport.value === "ws" || !webrtcAvailable() ? "ws" : "webrtc";
    if (mode === "webrtc" && !webrtcAvailable()) mode = "ws";
    if (mode !== "file") ui.transport.value = mode;
    const drive = ui.drive.value;
    const run = {
      mode, label, attempt: 0, stopping: false, queue: [], queued: 0,
      format: drive === "coeffs" ? "coeffs" : config.vertexFormat, // may fall back to vertices
      weights: drive === "weights",
      byteRate: new ByteRate({ windowS: 2 }),
    };
    this.run = run;
    hook.source = mode;
    hook.fallback = null;
    this.setState("connecting");
    this.updateButtons();
    try {
      if (mode === "file") {
        const ctx = await this.ensureAudioContext();
        run.file = await FilePlayer.decode(ctx, arrayBuffer);
        run.sampleRate = FILE_SEND_RATE_HZ;
      } else {
        run.stream = await openMicrophone();
        run.meter = new LevelMeter(run.stream, (db) => {
          pushBounded(hook.micLevel, { at: performance.now(), db });
          run.levelDb = db;
        });
        if (mode === "ws") {
          run.capture = await WorkletCapture.start(run.stream, (pcm) => this.onMicChunk(run, pcm));
          run.sampleRate = run.capture.sampleRate;
        } else {
          run.sampleRate = WEBRTC_SAMPLE_RATE_HZ;
        }
      }
    } catch (err) {
      const code = err instanceof AudioSourceError ? err.kind : "audio";
      this.releaseSources(run);
      if (this.run === run) this.run = null;
      this.fail(err.message, code);
      this.updateButtons();
      this.probeHealth();
      return;
    }
    ui.metaSource.textContent = mode === "file" ? `file ${label ?? ""} (${run.file.duration.toFixed(1)} s)` : `mic · ${mode}`;
    // Coefficient frames without basis vectors need the face asset's morph targets: let it load.
    if (run.format === "coeffs") await Promise.race([this.assetLoaded, new Promise((r) => setTimeout(r, 3000))]);
    if (this.run !== run) return;
    this.connect(run);
  }

  connect(run) {
    const identity = ui.identity.value || config.identity || null;
    run.session = new Session(config.wsUrl, {
      sampleRate: run.sampleRate,
      encoding: "pcm_f32le",
      audio: run.mode === "webrtc" ? "webrtc" : "ws",
      identity,
      format: run.format,
      weights: run.weights && run.format !== "coeffs",
      token: config.token,
    }, {
      onOpen: () => this.run === run && this.setState("connecting"),
      onMessage: (msg, bytes) => this.run === run && this.onMessage(run, msg, bytes),
      onClose: (info) => this.onClose(run, info),
    });
    run.session.connect();
  }

  onMessage(run, msg, bytes) {
    run.byteRate.add(bytes, performance.now() / 1000);
    hook.bytesReceived += bytes;
    switch (msg.type) {
      case "ready": return this.onReady(run, msg);
      case "answer": return run.rtc?.applyAnswer(msg.sdp).catch((err) => this.fail(`WebRTC answer rejected: ${err.message}`, "webrtc"));
      case "frame": return this.onFrame(run, msg, bytes);
      case "stats": hook.serverStats = msg; return undefined;
      case "error":
        pushBounded(hook.errors, { code: msg.code, message: msg.message });
        return undefined;
      case "end":
        hook.ended = msg;
        run.serverEnded = true;
        return undefined;
      default: return undefined;
    }
  }

  async onReady(run, ready) {
    run.attempt = 0;
    run.ready = ready;
    run.fps = ready.fps;
    run.vertexCount = ready.mesh.vertex_count;
    run.playout = new PlayoutBuffer({ fps: ready.fps });
    run.counter = new FrameCounter();
    run.latencyWindow = new SlidingWindow(LATENCY_WINDOW);
    run.vbuf = new Float32Array(run.vertexCount * 3); // shown frame
    run.scratch = new Float32Array(run.vertexCount * 3); // measured frame
    run.coeffCount = ready.basis?.names.length ?? 0;
    run.cbuf = new Float32Array(run.coeffCount); // shown frame's coefficients
    run.cscratch = new Float32Array(run.coeffCount); // measured frame's
    hook.session = ready.session;
    hook.format = run.format;
    hook.basis = ready.basis ? { names: [...ready.basis.names], vectors: ready.basis.vectors !== null } : null;
    hook.lookaheadMs = ready.lookahead_ms;
    hook.identity = ready.identity;
    hook.fps = ready.fps;
    hook.vertexCount = run.vertexCount;
    this.defaultIdentity ??= ready.identity;
    this.fillIdentities(ready.identities, ready.identity);
    ui.metaSession.textContent = ready.session;
    // The face's mode is the run's: coefficient frames drive morph targets; vertex frames
    // (positions, or ARKit weights on the glTF) switch per frame in display().
    this.face.setMode(run.format === "coeffs" ? "coeffs" : this.face.mode === "coeffs" ? "vertices" : this.face.mode);
    const basis = ready.basis ? { names: ready.basis.names, vectors: ready.basis.vectors } : null;
    const key = { template: ready.mesh.template, names: basis?.names.join("\n") ?? null, vectors: basis?.vectors ?? null };
    if (!sameMesh(this.meshKey, key)) {
      this.meshKey = { template: key.template.slice(), names: key.names, vectors: key.vectors?.slice() ?? null };
      this.face.setMesh({
        vertexCount: run.vertexCount,
        template: P.f32FromBytes(ready.mesh.template, "ready.mesh.template"),
        faces: P.u32FromBytes(ready.mesh.faces, "ready.mesh.faces"),
        blendshapes: ready.blendshapes,
        basis: basis && { names: basis.names, vectors: P.basisVectors(basis) },
      });
      ui.faceNote.hidden = true;
    }
    if (run.format === "coeffs" && this.face.coeffError) return this.fallBackToVertices(run, this.face.coeffError);
    this.updateFaceMeta();
    this.banner(run.fallback ? fallbackText(run.fallback) : null, "warn");
    this.setState("streaming");
    this.updateButtons();
    if (run.mode === "webrtc") {
      try {
        run.rtc?.close();
        run.rtc = new WebRtcSender(run.stream, (state) => {
          hook.rtcState = state;
          if (state === "failed" && this.run === run) this.banner("The WebRTC audio connection failed; try the WebSocket transport.", "bad");
        });
        run.session.sendOffer(await run.rtc.createOffer());
      } catch (err) {
        this.fail(`WebRTC failed: ${err.message}`, "webrtc");
      }
    } else if (run.mode === "ws") {
      for (const pcm of run.queue) run.session.sendAudio(f32Bytes(pcm));
      run.queue = [];
      run.queued = 0;
    } else if (run.mode === "file") {
      run.file.startStreaming((pcm) => run.session.sendAudio(f32Bytes(pcm)), () => run.session.sendEnd());
      run.firstFrameTimer = setTimeout(() => this.schedulePlayback(run, FIRST_FRAME_WAIT_S), FIRST_FRAME_WAIT_S * 1000);
    }
  }

  onMicChunk(run, pcm) {
    if (run.stopping) return;
    if (run.session?.ready && run.session.open) {
      run.session.sendAudio(f32Bytes(pcm));
      return;
    }
    // Before `ready` (or while reconnecting): hold the audio, bounded.
    run.queue.push(pcm);
    run.queued += pcm.length;
    while (run.queued > MIC_QUEUE_MAX_S * run.sampleRate) run.queued -= run.queue.shift().length;
  }

  /**
   * Coefficient frames cannot be shown here (no basis, or no vectors and no matching face asset):
   * start this run again asking for vertex frames. Not an error: the face still moves.
   */
  fallBackToVertices(run, why) {
    hook.fallback = why;
    run.fallback = why;
    console.warn(`coefficient frames: ${why}; asking for vertex frames instead`);
    this.banner(fallbackText(why), "warn");
    run.format = config.vertexFormat;
    this.meshKey = null;
    this.face.setMode("vertices");
    const old = run.session;
    old.handlers = {}; // its close is not this run's end
    old.close();
    this.connect(run); // the audio has not started yet: it starts on the next `ready`
  }

  onFrame(run, frame, bytes) {
    const now = performance.now();
    const gap = run.counter.add(frame.seq, now / 1000);
    hook.framesReceived += 1;
    hook.drops += gap;
    run.latencyWindow.add(frame.latency_ms);
    hook.latency = { p50: run.latencyWindow.percentile(50), p95: run.latencyWindow.percentile(95) };
    const kind = frame.coeffs ? "coeffs" : "vertices";
    hook.lastFrame = { seq: frame.seq, t: frame.t, latency_ms: frame.latency_ms, receivedAt: now, hasWeights: !!frame.weights, kind, bytes };
    // Measured on arrival, so the history holds every frame even when rendering is slow; a
    // coefficient frame through the basis on the CPU (the GPU does the same for the shown one).
    let m = null;
    if (run.format === "coeffs") {
      const coeffs = this.decodeCoeffs(run, frame, run.cscratch);
      if (coeffs) m = this.face.measureCoeffs(coeffs);
    } else {
      const vertices = this.decodeVertices(run, frame, run.scratch);
      if (vertices) m = this.face.measure(vertices);
    }
    if (m) {
      pushBounded(hook.lipSpread, { seq: frame.seq, t: frame.t, mouth: m.mouth, motion: m.motion, latencyMs: frame.latency_ms, receivedAt: now });
    }
    if (!run.playout.push(frame)) hook.lateFrames += 1;
    if (run.mode === "file" && run.file && run.file.delayS === null && config.delayMs === null) {
      // Frame t arrived this long after audio t was sent: play the audio that much (+margin) late.
      this.schedulePlayback(run, choosePlayoutDelayS((now - run.file.startWallMs) / 1000 - frame.t));
    }
  }

  /** The frame's vertices as Float32Array in `out`, or null (recorded once) when malformed. */
  decodeVertices(run, frame, out) {
    try {
      return P.frameVertices(frame, { format: run.format, vertexCount: run.vertexCount }, out);
    } catch (err) {
      return this.badFrame(run, err);
    }
  }

  /** The frame's coefficients as Float32Array in `out`, or null (recorded once) when malformed. */
  decodeCoeffs(run, frame, out) {
    try {
      return P.frameCoeffs(frame, run.coeffCount, out);
    } catch (err) {
      return this.badFrame(run, err);
    }
  }

  badFrame(run, err) {
    if (!run.badFrame) pushBounded(hook.errors, { code: err.code ?? "bad_frame", message: err.message });
    run.badFrame = true;
    return null;
  }

  schedulePlayback(run, delayS) {
    clearTimeout(run.firstFrameTimer);
    if (!run.file || run.file.delayS !== null || run.stopping) return;
    const d = config.delayMs !== null ? config.delayMs / 1000 : delayS;
    run.file.schedulePlayback(d);
    hook.playoutDelayMs = Math.round(d * 1000);
  }

  onClose(run, { code, reason, error, wasReady }) {
    pushBounded(hook.closes, { code, reason, error: error ? { code: error.code, message: error.message } : null });
    if (this.run !== run) return;
    if (!wasReady && run.format === "coeffs" && error?.code === "bad_value" && /'format'/.test(error.message)) {
      return this.fallBackToVertices(run, "this server does not offer them"); // a v1.0 server
    }
    const what = describeClose(code, error);
    if (run.stopping || code === P.CLOSE.NORMAL) {
      // Finished: a file keeps playing out the frames it has.
      if (run.mode === "file" && run.file && !run.stopping) {
        run.closed = true;
        this.setState("ending");
        return;
      }
      this.finishRun(run);
      return;
    }
    if (what.retry && !run.mode.startsWith("file")) {
      const slow = what.kind === "server_full";
      const delay = backoffDelayMs(run.attempt++, slow ? { baseMs: 3000, maxMs: 30000 } : {});
      const text = wasReady || slow || code !== 1006 ? what.text : "Cannot reach the server. Retrying…";
      this.banner(`${text.replace(/Retrying…|Reconnecting…/, "")} Retrying in ${(delay / 1000).toFixed(1)} s.`, "warn");
      this.setState(wasReady ? "reconnecting" : "offline");
      run.rtc?.close();
      run.rtc = null;
      run.retryTimer = setTimeout(() => this.run === run && !run.stopping && this.connect(run), delay);
      return;
    }
    this.releaseSources(run);
    this.run = null;
    this.face.rest();
    hook.source = null;
    pushBounded(hook.errors, { code: error?.code ?? what.kind, message: what.text });
    this.banner(what.text, "bad");
    this.setState("error");
    this.updateButtons();
    this.probeHealth();
  }

  /** Stop the source; ask the server for the remaining frames (`end`), close when it is done. */
  async stop() {
    const run = this.run;
    if (!run || run.stopping) return;
    run.stopping = true;
    clearTimeout(run.retryTimer);
    clearTimeout(run.firstFrameTimer);
    this.releaseSources(run);
    const s = run.session;
    if (s?.open) {
      if (run.mode === "file") s.sendInterrupt();
      s.sendEnd();
      this.setState("ending");
      run.closeTimer = setTimeout(() => s.close(), 3000);
    } else {
      s?.close();
      this.finishRun(run);
    }
  }

  /** Drop pending audio server-side; the face eases to neutral. A file stops playing. */
  interrupt() {
    const run = this.run;
    if (!run?.session?.open) return;
    run.session.sendInterrupt();
    run.playout?.clear();
    if (run.mode === "file") {
      run.file.stop();
      run.mode = "file-interrupted"; // show the easing-out frames live, then end
      run.session.sendEnd();
    }
  }

  setIdentity(name) {
    if (name && ![...ui.identity.options].some((o) => o.value === name)) addOption(ui.identity, name, name);
    ui.identity.value = name ?? "";
    const target = name || this.defaultIdentity;
    if (this.run?.ready && target) this.run.session.sendIdentity(target);
  }

  releaseSources(run) {
    run.capture?.stop();
    run.capture = null;
    run.rtc?.close();
    run.rtc = null;
    run.meter?.stop();
    run.meter = null;
    run.file?.stop();
    for (const track of run.stream?.getTracks() ?? []) track.stop();
    run.stream = null;
  }

  finishRun(run) {
    clearTimeout(run.closeTimer);
    this.releaseSources(run);
    if (this.run === run) {
      this.run = null;
      this.face.rest(); // stopped: the neutral face, not the last frame
      hook.shownMouth = this.face.shownMouth();
    }
    hook.source = null;
    this.setState("online");
    this.updateButtons();
    this.probeHealth();
  }

  // ---- display --------------------------------------------------------------------------------
  loop() {
    // While frames stream, a display slower than SLOW_FRAME_MS (weak GPU, software GL) would show
    // frames late: lower the resolution until it keeps up.
    const SLOW_FRAME_MS = 45;
    let last = performance.now();
    let ema = 16;
    let lastCheck = performance.now();
    const tick = () => {
      const run = this.run;
      const now = performance.now();
      const dt = now - last;
      last = now;
      if (run?.playout && dt < 1000) {
        ema = 0.8 * ema + 0.2 * dt;
        if (now - lastCheck > 1000) {
          lastCheck = now;
          if (ema > SLOW_FRAME_MS) hook.pixelRatio = this.face.reduceResolution(0.6);
        }
      }
      if (run?.playout) {
        let frame = null;
        let clock = null;
        if (run.mode === "file") {
          clock = run.file.clock();
          if (clock !== null) frame = run.playout.at(clock);
          if (run.closed && run.file.finished) this.finishRun(run);
        } else {
          frame = run.playout.latest();
        }
        if (frame) this.display(run, frame, clock);
      }
      this.face.render();
      hook.renderMs = this.face.renderMs ?? null;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  display(run, frame, clock) {
    if (run.format === "coeffs") {
      const coeffs = this.decodeCoeffs(run, frame, run.cbuf);
      if (!coeffs) return;
      this.face.showCoeffs(coeffs);
    } else if (!this.displayVertices(run, frame)) {
      return;
    }
    hook.framesShown += 1;
    hook.shownSeq = frame.seq;
    hook.shownMouth = this.face.shownMouth();
    if (clock !== null) {
      const wallClock = (performance.now() - run.file.startWallMs) / 1000 - run.file.delayS;
      pushBounded(hook.avSync, { seq: frame.seq, t: frame.t, clock, wallClock, offsetMs: (clock - frame.t) * 1000, buffered: run.playout.size });
    }
  }

  /** Show a vertex frame (positions, or ARKit weights on the glTF); false when malformed. */
  displayVertices(run, frame) {
    const vertices = this.decodeVertices(run, frame, run.vbuf);
    if (!vertices) return false;
    let weights = null;
    try {
      if (frame.weights) weights = P.frameWeights(frame, run.ready.blendshapes.length);
    } catch (err) {
      pushBounded(hook.errors, { code: err.code, message: err.message });
    }
    const want = ui.drive.value === "weights" && weights && this.face.gltf ? "weights" : "vertices";
    if (this.face.mode !== want) {
      this.face.setMode(want);
      this.updateFaceMeta();
    }
    this.face.show(vertices, weights);
    return true;
  }

  // ---- UI -------------------------------------------------------------------------------------
  setState(state) {
    hook.state = state;
    const labels = {
      starting: ["starting…", "warn"], offline: ["offline", "bad"], online: ["server online", "ok"],
      connecting: ["connecting…", "warn"], streaming: ["streaming", "ok"], reconnecting: ["reconnecting…", "warn"],
      ending: ["finishing…", "warn"], error: ["error", "bad"],
    };
    const [text, level] = labels[state] ?? [state, ""];
    ui.pill.textContent = text;
    ui.pill.className = `pill ${level}`;
    ui.dot.className = `dot ${level}`;
    ui.state.textContent = state === "offline" ? "offline — waiting for the server" : text;
  }

  banner(text, level = "") {
    hook.message = text;
    ui.banner.hidden = !text;
    ui.banner.textContent = text ?? "";
    ui.banner.className = `banner ${level}`;
  }

  fail(text, code = "client") {
    pushBounded(hook.errors, { code, message: text });
    this.banner(text, "bad");
    console.warn(text);
  }

  updateButtons() {
    const running = !!this.run;
    ui.mic.textContent = running && this.run.mode !== "file" ? "Stop microphone" : "Start microphone";
    ui.mic.classList.toggle("active", running && this.run.mode !== "file");
    ui.mic.disabled = running && this.run.mode === "file";
    ui.fileLabel.classList.toggle("disabled", running);
    ui.stop.disabled = !running;
    ui.interrupt.disabled = !running;
    ui.transport.disabled = running;
  }

  fillIdentities(names, current) {
    const keep = ui.identity.value || config.identity || "";
    const opts = [...ui.identity.options].slice(0, 2); // "server default", "auto"
    ui.identity.replaceChildren(...opts);
    for (const n of names) if (n !== "auto") addOption(ui.identity, n, n);
    if (keep && ![...ui.identity.options].some((o) => o.value === keep)) addOption(ui.identity, keep, keep);
    ui.identity.value = keep;
    ui.identity.options[0].textContent = current ? `server default (${current})` : "server default";
    hook.identities = [...names];
  }

  updateFaceMeta() {
    hook.faceSource = this.face.faceSource;
    ui.metaFace.textContent = `${this.face.faceSource} · ${this.face.mode}`;
  }

  updateHud() {
    const run = this.run;
    const now = performance.now() / 1000;
    const fmt = (x) => (Number.isFinite(x) ? x.toFixed(0) : "–");
    ui.latency.textContent = hook.latency.p50 === null ? "–" : `${fmt(hook.latency.p50)} / ${fmt(hook.latency.p95)} ms`;
    const s = hook.serverStats;
    ui.serverLatency.textContent = s && s.latency_p50_ms !== null ? `${fmt(s.latency_p50_ms)} / ${fmt(s.latency_p95_ms)} ms` : "–";
    ui.fps.textContent = run?.counter ? run.counter.rate(now).toFixed(1) : "–";
    ui.frames.textContent = `${hook.framesReceived} · ${hook.drops}${s ? ` (srv ${s.dropped_frames})` : ""}`;
    const last = hook.avSync[hook.avSync.length - 1];
    ui.level.textContent = run && run.levelDb !== undefined && run.meter ? `${Math.max(-99, run.levelDb).toFixed(0)} dBFS` : "–";
    ui.av.textContent = run?.mode === "file" && last ? `${last.offsetMs.toFixed(0)} ms (delay ${hook.playoutDelayMs ?? "–"} ms)` : "–";
    hook.bytesPerS = run?.byteRate ? run.byteRate.rate(now) : null;
    ui.rate.textContent = hook.bytesPerS === null ? "–" : `${formatRate(hook.bytesPerS)}${run.format === "coeffs" ? " · coeffs" : ` · ${run.format} vertices`}`;
  }
}

function addOption(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.append(o);
}

const fallbackText = (why) => `Coefficient frames cannot be shown (${why}): streaming vertices instead.`;

/** Bytes per second as the HUD shows it: "4.9 KiB/s", "475 KiB/s", "1.2 MiB/s". */
function formatRate(bytesPerS) {
  const kib = bytesPerS / 1024;
  if (kib >= 1024) return `${(kib / 1024).toFixed(1)} MiB/s`;
  return `${kib >= 100 ? kib.toFixed(0) : kib.toFixed(1)} KiB/s`;
}

/** Whether two {template, names, vectors} mesh keys (from `ready`) are the same. */
function sameMesh(a, b) {
  if (!a || a.names !== b.names) return false;
  if ((a.vectors === null) !== (b.vectors === null)) return false;
  return sameBytes(a.template, b.template) && (a.vectors === null || sameBytes(a.vectors, b.vectors));
}

function sameBytes(a, b) {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const app = new App();
app.init();
