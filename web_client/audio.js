// Audio sources for the viewer: the microphone over WebRTC, the microphone as PCM over /ws
// (AudioWorklet), and a local file streamed in real time and played back in sync with the frames.

const WORKLET_URL = new URL("./pcm-worklet.js", import.meta.url);
export const CHUNK_MS = 20; // PCM per `audio` message: small for latency, far under the 1 s cap
export const FILE_SEND_RATE_HZ = 16000; // the server's internal rate: no resampling there
const ICE_GATHER_TIMEOUT_MS = 3000;

/** A user-facing audio problem; `kind` is "mic_denied" | "mic_missing" | "unsupported" | "decode". */
export class AudioSourceError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "AudioSourceError";
    this.kind = kind;
  }
}

/** The microphone as a MediaStream. Throws AudioSourceError with a clear message. */
export async function openMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new AudioSourceError("unsupported", "This browser cannot capture the microphone here (it needs https or localhost).");
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new AudioSourceError("mic_denied", "Microphone access was denied. Allow it in the browser's site settings, then press Start again.");
    }
    if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
      throw new AudioSourceError("mic_missing", "No microphone was found.");
    }
    throw new AudioSourceError("unsupported", `Microphone failed: ${err.message || err.name}`);
  }
}

export const webrtcAvailable = () => typeof RTCPeerConnection === "function";

/**
 * Sends a mic track to the server over WebRTC. Signalling is one offer/answer over /ws and there is
 * no trickle ICE, so the offer is sent only once ICE gathering is complete (or after a timeout).
 */
export class WebRtcSender {
  /** `onState(connectionState)` is called on every change of the peer connection's state. */
  constructor(stream, onState = null) {
    this.stream = stream;
    this.pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of stream.getAudioTracks()) this.pc.addTrack(track, stream);
    if (onState) this.pc.addEventListener("connectionstatechange", () => onState(this.pc.connectionState));
  }

  /** The complete offer SDP (candidates included). */
  async createOffer() {
    const offer = await this.pc.createOffer({ offerToReceiveAudio: false, offerToReceiveVideo: false });
    await this.pc.setLocalDescription(offer);
    await waitIceComplete(this.pc, ICE_GATHER_TIMEOUT_MS);
    return this.pc.localDescription.sdp;
  }

  async applyAnswer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp });
  }

  get connectionState() {
    return this.pc.connectionState;
  }

  close() {
    this.pc.close();
  }
}

function waitIceComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * The microphone's level: every `intervalMs`, `onLevel(dbfs)` with the RMS level in dBFS of the
 * last ~40 ms (-100 for digital silence). Shown in the HUD; tests use it to tell speech from pauses.
 */
export class LevelMeter {
  constructor(stream, onLevel, intervalMs = 50) {
    this.ctx = new AudioContext({ latencyHint: "interactive" });
    this.source = this.ctx.createMediaStreamSource(stream);
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.source.connect(this.analyser);
    this.ctx.resume().catch(() => {});
    const buf = new Float32Array(this.analyser.fftSize);
    this.timer = setInterval(() => {
      this.analyser.getFloatTimeDomainData(buf);
      let sq = 0;
      for (let i = 0; i < buf.length; i++) sq += buf[i] * buf[i];
      const rms = Math.sqrt(sq / buf.length);
      onLevel(rms > 1e-5 ? 20 * Math.log10(rms) : -100);
    }, intervalMs);
  }

  stop() {
    clearInterval(this.timer);
    this.source.disconnect();
    this.ctx.close().catch(() => {});
  }
}

/**
 * Captures mic PCM with an AudioWorklet: mono float32 chunks of CHUNK_MS at `sampleRate` (the
 * AudioContext's rate, kept within the protocol's 8..48 kHz) passed to `onChunk(Float32Array)`.
 */
export class WorkletCapture {
  static async start(stream, onChunk) {
    let ctx = new AudioContext({ latencyHint: "interactive" });
    if (ctx.sampleRate > 48000 || ctx.sampleRate < 8000) {
      await ctx.close();
      ctx = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
    }
    await ctx.audioWorklet.addModule(WORKLET_URL);
    const source = ctx.createMediaStreamSource(stream);
    const chunkFrames = Math.round((ctx.sampleRate * CHUNK_MS) / 1000);
    const node = new AudioWorkletNode(ctx, "pcm-capture", { numberOfInputs: 1, numberOfOutputs: 1, processorOptions: { chunkFrames } });
    node.port.onmessage = (e) => onChunk(e.data);
    // A silent path to the destination keeps the graph pulling on every browser.
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    await ctx.resume();
    return new WorkletCapture(ctx, source, node);
  }

  constructor(ctx, source, node) {
    this.ctx = ctx;
    this.source = source;
    this.node = node;
  }

  get sampleRate() {
    return this.ctx.sampleRate;
  }

  async stop() {
    this.node.port.postMessage("stop");
    this.source.disconnect();
    this.node.disconnect();
    await this.ctx.close().catch(() => {});
  }
}

/**
 * A decoded audio file, streamed as real-time PCM and played through the speakers `delay` seconds
 * behind what was sent, so that frame t (t = seconds from the first sample sent) is shown when
 * audio t is heard: `clock()` is the media time being heard now.
 */
export class FilePlayer {
  /** `ctx`: a running AudioContext (create/resume it in the click handler). */
  static async decode(ctx, arrayBuffer, { sendRateHz = FILE_SEND_RATE_HZ } = {}) {
    let playback;
    try {
      playback = await ctx.decodeAudioData(arrayBuffer.slice(0));
    } catch (err) {
      throw new AudioSourceError("decode", `Could not decode that file as audio (${err?.message || "unsupported format"}).`);
    }
    // Mono at the send rate: an OfflineAudioContext with one channel downmixes and resamples.
    const frames = Math.max(1, Math.ceil(playback.duration * sendRateHz));
    const off = new OfflineAudioContext(1, frames, sendRateHz);
    const src = off.createBufferSource();
    src.buffer = playback;
    src.connect(off.destination);
    src.start();
    const mono = (await off.startRendering()).getChannelData(0);
    return new FilePlayer(ctx, playback, mono, sendRateHz);
  }

  constructor(ctx, playback, pcm, sendRateHz) {
    this.ctx = ctx;
    this.playback = playback;
    this.pcm = pcm; // Float32Array mono at sendRateHz
    this.sendRateHz = sendRateHz;
    this.sent = 0; // samples sent
    this.startWallMs = null; // performance.now() when sample 0 was sent
    this.delayS = null;
    this.startCtx = null; // context time at which media time 0 is played
    this.node = null;
    this.timer = null;
  }

  get duration() {
    return this.pcm.length / this.sendRateHz;
  }

  /** Send the PCM paced by the wall clock: `send(Float32Array)` every CHUNK_MS, then `onDone()`. */
  startStreaming(send, onDone) {
    this.startWallMs = performance.now();
    const maxChunk = this.sendRateHz; // ≤ 1 s per message even after a throttled timer
    const tick = () => {
      const due = Math.min(this.pcm.length, Math.floor(((performance.now() - this.startWallMs) / 1000) * this.sendRateHz) + 1);
      while (this.sent < due) {
        const n = Math.min(due - this.sent, maxChunk);
        send(this.pcm.subarray(this.sent, this.sent + n));
        this.sent += n;
      }
      if (this.sent >= this.pcm.length) {
        this.stopStreaming();
        onDone?.();
      }
    };
    tick();
    this.timer = setInterval(tick, CHUNK_MS);
  }

  stopStreaming() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Start playback so that media time 0 is heard `delayS` after sample 0 was sent. */
  schedulePlayback(delayS) {
    if (this.node || this.startWallMs === null) return;
    this.delayS = delayS;
    const outLatency = (this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0);
    const wallLeftS = (this.startWallMs + delayS * 1000 - performance.now()) / 1000;
    // Audio scheduled at context time T is heard at about T + output latency.
    const when = this.ctx.currentTime + wallLeftS - outLatency;
    this.node = this.ctx.createBufferSource();
    this.node.buffer = this.playback;
    this.node.connect(this.ctx.destination);
    if (when >= this.ctx.currentTime) {
      this.node.start(when);
      this.startCtx = when;
    } else {
      const offset = this.ctx.currentTime - when; // already late: skip into the file
      this.node.start(this.ctx.currentTime, offset);
      this.startCtx = when;
    }
  }

  /** Media time (s) being heard now, or null before playback is scheduled. */
  clock() {
    if (this.startCtx === null) return null;
    if (this.ctx.state !== "running") {
      // No audio output (suspended context): follow the wall clock instead.
      return (performance.now() - this.startWallMs) / 1000 - this.delayS;
    }
    const ts = this.ctx.getOutputTimestamp?.();
    let heard;
    if (ts && ts.performanceTime > 0) heard = ts.contextTime + (performance.now() - ts.performanceTime) / 1000;
    else heard = this.ctx.currentTime - (this.ctx.outputLatency || 0);
    return heard - this.startCtx;
  }

  get finished() {
    const c = this.clock();
    return c !== null && c > this.playback.duration + 0.2;
  }

  stop() {
    this.stopStreaming();
    try {
      this.node?.stop();
    } catch {
      /* not started */
    }
    this.node?.disconnect();
    this.node = null;
  }
}

/** Float32 PCM -> little-endian pcm_f32le bytes (a view when possible). */
export function f32Bytes(pcm) {
  return new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
}
