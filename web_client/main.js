// The viewer page: wires the face, the /ws session, the audio sources, the controls and the HUD.
//
// URL parameters:
//   ?token=T            sent in hello (the server closes with 1008 when it is wrong)
//   ?identity=NAME      talking style for hello ("auto" = picked from the voice)
//   ?autostart=mic|webrtc|ws|file   start without a click (mic = WebRTC when available, else ws)
//   ?src=URL            the audio file for autostart=file
//   ?drive=weights      drive the glTF's morph targets from ARKit weights (hello weights: true)
//   ?format=f32         vertex format asked for in hello (default f16)
//   ?ws=URL             WebSocket URL (default: this page's host, /ws)
//   ?delay_ms=N         fixed playout delay for file playback (default: from the first frame)
//   ?asset=URL          face asset (default /assets/facecap.glb)
// Test hook: window.__talker (see `hook` below).

import * as P from "./protocol.js";
import { FaceView } from "./face.js";
import { Session, describeClose, defaultWsUrl } from "./session.js";
import { PlayoutBuffer, FrameCounter, SlidingWindow, backoffDelayMs, choosePlayoutDelayS } from "./playout.js";
import {
  AudioSourceError, FilePlayer, LevelMeter, WebRtcSender, WorkletCapture, f32Bytes, openMicrophone, webrtcAvailable, FILE_SEND_RATE_HZ,
} from "./audio.js";

const params = new URLSearchParams(window.location.search);
const config = Object.freeze({
  token: params.get("token"),
  identity: params.get("identity"),
  autostart: params.get("autostart"),
  src: params.get("src"),
  drive: params.get("drive") === "weights" ? "weights" : "vertices",
  format: params.get("format") === "f32" ? "f32" : "f16",
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
  latency: $("hud-latency"), serverLatency: $("hud-server-latency"), fps: $("hud-fps"), frames: $("hud-frames"), av: $("hud-av"), level: $("hud-level"),
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
  assetLoaded: null, // true | false once tried
  faceSource: "none", // "gltf" | "template+gltf" | "template" | "none"
  framesReceived: 0, framesShown: 0, drops: 0, lateFrames: 0,
  lastFrame: null, // {seq, t, latency_ms, receivedAt (performance.now ms), hasWeights}
  latency: { p50: null, p95: null }, // ms, over the last LATENCY_WINDOW frames
  serverStats: null, // the last `stats` message
  playoutDelayMs: null, // file playback: audio is heard this long after it is sent
  lipSpread: [], // every frame received: {seq, t, mouth (m, lip-centre distance; null if unknown), motion (mm RMS from template), latencyMs, receivedAt}
  micLevel: [], // microphone sources, every 50 ms: {at (performance.now ms), db (RMS dBFS)}
  rtcState: null, // the WebRTC peer connection's state (webrtc source)
  shownSeq: null, // seq of the frame on screen
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
    this.run = null; // the active source + session
    this.audioCtx = null; // for file playback; created in a click handler
    this.meshBytes = null;
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
    const assetPromise = this.face.loadAsset(config.asset).then((ok) => {
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
      this.face.setMode(ui.drive.value);
      this.updateFaceMeta();
      if (this.run && ui.drive.value === "weights" && !this.run.weights) {
        this.banner("ARKit weights were not requested for this session: they apply from the next start.", "warn");
      }
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
    const run = { mode, label, attempt: 0, stopping: false, weights: ui.drive.value === "weights", queue: [], queued: 0 };
    this.run = run;
    hook.source = mode;
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
    this.connect(run);
  }

  connect(run) {
    const identity = ui.identity.value || config.identity || null;
    run.session = new Session(config.wsUrl, {
      sampleRate: run.sampleRate,
      encoding: "pcm_f32le",
      audio: run.mode === "webrtc" ? "webrtc" : "ws",
      identity,
      format: config.format,
      weights: run.weights,
      token: config.token,
    }, {
      onOpen: () => this.run === run && this.setState("connecting"),
      onMessage: (msg) => this.run === run && this.onMessage(run, msg),
      onClose: (info) => this.onClose(run, info),
    });
    run.session.connect();
  }

  onMessage(run, msg) {
    switch (msg.type) {
      case "ready": return this.onReady(run, msg);
      case "answer": return run.rtc?.applyAnswer(msg.sdp).catch((err) => this.fail(`WebRTC answer rejected: ${err.message}`, "webrtc"));
      case "frame": return this.onFrame(run, msg);
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
    hook.session = ready.session;
    hook.identity = ready.identity;
    hook.fps = ready.fps;
    hook.vertexCount = run.vertexCount;
    this.defaultIdentity ??= ready.identity;
    this.fillIdentities(ready.identities, ready.identity);
    ui.metaSession.textContent = ready.session;
    if (!sameBytes(this.meshBytes, ready.mesh.template)) {
      this.meshBytes = ready.mesh.template.slice();
      this.face.setMesh({
        vertexCount: run.vertexCount,
        template: P.f32FromBytes(ready.mesh.template, "ready.mesh.template"),
        faces: P.u32FromBytes(ready.mesh.faces, "ready.mesh.faces"),
        blendshapes: ready.blendshapes,
      });
      ui.faceNote.hidden = true;
    }
    this.updateFaceMeta();
    this.banner(null);
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

  onFrame(run, frame) {
    const now = performance.now();
    const gap = run.counter.add(frame.seq, now / 1000);
    hook.framesReceived += 1;
    hook.drops += gap;
    run.latencyWindow.add(frame.latency_ms);
    hook.latency = { p50: run.latencyWindow.percentile(50), p95: run.latencyWindow.percentile(95) };
    hook.lastFrame = { seq: frame.seq, t: frame.t, latency_ms: frame.latency_ms, receivedAt: now, hasWeights: !!frame.weights };
    // Measured on arrival, so the history holds every frame even when rendering is slow.
    const vertices = this.decodeVertices(run, frame, run.scratch);
    if (vertices) {
      const m = this.face.measure(vertices);
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
      return P.frameVertices(frame, { format: config.format, vertexCount: run.vertexCount }, out);
    } catch (err) {
      if (!run.badFrame) pushBounded(hook.errors, { code: err.code ?? "bad_frame", message: err.message });
      run.badFrame = true;
      return null;
    }
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
    if (this.run === run) this.run = null;
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
    const vertices = this.decodeVertices(run, frame, run.vbuf);
    if (!vertices) return;
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
    hook.framesShown += 1;
    hook.shownSeq = frame.seq;
    if (clock !== null) {
      const wallClock = (performance.now() - run.file.startWallMs) / 1000 - run.file.delayS;
      pushBounded(hook.avSync, { seq: frame.seq, t: frame.t, clock, wallClock, offsetMs: (clock - frame.t) * 1000, buffered: run.playout.size });
    }
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
  }
}

function addOption(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.append(o);
}

function sameBytes(a, b) {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const app = new App();
app.init();
