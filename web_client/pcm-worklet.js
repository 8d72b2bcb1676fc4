// AudioWorklet processor: downmixes the microphone to mono and posts Float32Array chunks of
// `chunkFrames` samples (at the AudioContext's rate) to the main thread, which sends them to /ws.
// The buffers are transferred, not copied; a fresh one is allocated per chunk.

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunkFrames = options?.processorOptions?.chunkFrames ?? 960;
    this.buf = new Float32Array(this.chunkFrames);
    this.n = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected yet
    const frames = channels[0].length;
    const scale = 1 / channels.length;
    for (let i = 0; i < frames; i++) {
      let s = 0;
      for (let c = 0; c < channels.length; c++) s += channels[c][i];
      this.buf[this.n++] = s * scale;
      if (this.n === this.chunkFrames) {
        this.port.postMessage(this.buf, [this.buf.buffer]);
        this.buf = new Float32Array(this.chunkFrames);
        this.n = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
