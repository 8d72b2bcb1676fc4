// Pure pieces of the viewer's timing: the frame playout buffer, frame accounting and latency
// windows. No DOM, no clocks: every method takes the time as an argument, so tests never sleep.

/**
 * Frames keyed by their media time `t` (seconds from the session's first audio sample).
 *
 * Two policies, chosen by the caller:
 * - `latest()`: live microphone, "latest frame wins" — show the newest frame as soon as it is here.
 * - `at(clock)`: file playback — show the frame whose t is nearest the audio clock without being
 *   more than half a frame ahead of it, so picture and sound stay within half a frame (+ a refresh).
 * Frames older than the one shown are discarded; the buffer is bounded (oldest dropped, counted).
 */
export class PlayoutBuffer {
  constructor({ fps = 30, capacity = 600 } = {}) {
    this.fps = fps;
    this.capacity = capacity;
    this.frames = []; // sorted by t
    this.overflowed = 0; // frames dropped because the buffer was full
    this.late = 0; // frames that arrived after a newer frame had been shown
    this.shownT = -Infinity;
  }

  clear() {
    this.frames.length = 0;
    this.shownT = -Infinity;
  }

  get size() {
    return this.frames.length;
  }

  /** Add a frame `{t, ...}`. Returns false when it is already too old to be shown. */
  push(frame) {
    if (frame.t <= this.shownT) {
      this.late += 1;
      return false;
    }
    const f = this.frames;
    let i = f.length;
    while (i > 0 && f[i - 1].t > frame.t) i -= 1; // frames arrive in order: O(1) in practice
    f.splice(i, 0, frame);
    if (f.length > this.capacity) {
      f.shift();
      this.overflowed += 1;
    }
    return true;
  }

  /** Live policy: the newest frame (or null when nothing new), emptying the buffer. */
  latest() {
    if (this.frames.length === 0) return null;
    const frame = this.frames[this.frames.length - 1];
    this.frames.length = 0;
    this.shownT = frame.t;
    return frame;
  }

  /**
   * Clocked policy: the newest frame with t <= clock + half a frame (null when none is due or it
   * is the one already shown). Frames before it are discarded.
   */
  at(clock) {
    const due = clock + 0.5 / this.fps;
    let k = -1;
    for (let i = 0; i < this.frames.length && this.frames[i].t <= due; i++) k = i;
    if (k < 0) return null;
    const frame = this.frames[k];
    this.frames.splice(0, k + 1);
    this.shownT = frame.t;
    return frame;
  }

  /** Media time of the last frame in the buffer (how far ahead of the clock the server is). */
  get horizon() {
    return this.frames.length ? this.frames[this.frames.length - 1].t : this.shownT;
  }
}

/** Counts frames, seq gaps (server-side drops) and frames per second over a sliding window. */
export class FrameCounter {
  constructor({ windowS = 1.0 } = {}) {
    this.windowS = windowS;
    this.received = 0;
    this.gaps = 0; // frames missing between consecutive seqs
    this.reordered = 0;
    this.lastSeq = -1;
    this.arrivals = []; // arrival times (s) inside the window
  }

  /** Record frame `seq` arriving at `now` (seconds). Returns the gap before it (0 = none). */
  add(seq, now) {
    this.received += 1;
    let gap = 0;
    if (seq > this.lastSeq + 1) gap = seq - this.lastSeq - 1;
    else if (seq <= this.lastSeq) this.reordered += 1;
    this.gaps += gap;
    this.lastSeq = Math.max(this.lastSeq, seq);
    this.arrivals.push(now);
    this.trim(now);
    return gap;
  }

  trim(now) {
    const cut = now - this.windowS;
    let i = 0;
    while (i < this.arrivals.length && this.arrivals[i] < cut) i++;
    if (i) this.arrivals.splice(0, i);
  }

  /** Frames per second over the window ending at `now`. */
  rate(now) {
    this.trim(now);
    return this.arrivals.length / this.windowS;
  }
}

/**
 * Bytes received per second over a sliding window (the HUD's "received" figure: what a viewer
 * costs on the network, from the sizes of the messages that came).
 */
export class ByteRate {
  constructor({ windowS = 2.0 } = {}) {
    this.windowS = windowS;
    this.total = 0; // every byte added
    this.events = []; // [time (s), bytes] inside the window
    this.first = null; // time of the first message
  }

  /** Record a message of `bytes` arriving at `now` (seconds). */
  add(bytes, now) {
    this.total += bytes;
    this.first ??= now;
    this.events.push([now, bytes]);
    this.trim(now);
  }

  trim(now) {
    const cut = now - this.windowS;
    let i = 0;
    while (i < this.events.length && this.events[i][0] <= cut) i++;
    if (i) this.events.splice(0, i);
  }

  /**
   * Bytes per second over the window ending at `now` (over the time since the first message
   * while that is shorter, never under 0.25 s); null before the first message.
   */
  rate(now) {
    if (this.first === null) return null;
    this.trim(now);
    const span = Math.max(0.25, Math.min(this.windowS, now - this.first));
    let sum = 0;
    for (const [, b] of this.events) sum += b;
    return sum / span;
  }
}

/** The last `size` values, with percentiles (nearest-rank on the sorted window). */
export class SlidingWindow {
  constructor(size = 150) {
    this.size = size;
    this.values = [];
  }
  add(x) {
    this.values.push(x);
    if (this.values.length > this.size) this.values.shift();
  }
  clear() {
    this.values.length = 0;
  }
  get count() {
    return this.values.length;
  }
  /** q in [0, 100]; NaN when empty. */
  percentile(q) {
    if (this.values.length === 0) return NaN;
    const s = [...this.values].sort((a, b) => a - b);
    const rank = Math.ceil((q / 100) * s.length) - 1;
    return s[Math.min(s.length - 1, Math.max(0, rank))];
  }
}

/** Reconnect delays: base * 2^attempt, capped, with ±20 % jitter from `random` (0..1). */
export function backoffDelayMs(attempt, { baseMs = 500, maxMs = 15000, random = Math.random } = {}) {
  const d = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(d * (0.8 + 0.4 * random()));
}

/**
 * Playout delay for file playback: audio sample t is heard at start + delay + t, so every frame
 * whose motion latency is under `delay` is shown on time. Chosen from the first frame's arrival
 * (which carries the look-ahead and the first window's compute) plus a margin, within bounds.
 */
export function choosePlayoutDelayS(firstFrameDelayS, { marginS = 0.12, minS = 0.25, maxS = 1.5 } = {}) {
  return Math.min(maxS, Math.max(minS, firstFrameDelayS + marginS));
}
