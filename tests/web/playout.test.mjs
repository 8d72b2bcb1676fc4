// node --test tests/web/ : web_client/playout.js (time is an argument: no sleeps).
import { test } from "node:test";
import assert from "node:assert/strict";

import { PlayoutBuffer, FrameCounter, SlidingWindow, ByteRate, backoffDelayMs, choosePlayoutDelayS } from "../../web_client/playout.js";

const frame = (k, fps = 30) => ({ seq: k, t: k / fps });

test("clocked playout shows the frame nearest the audio clock, never > half a frame ahead", () => {
  const b = new PlayoutBuffer({ fps: 30 });
  for (let k = 0; k < 10; k++) b.push(frame(k));
  assert.equal(b.at(-0.1), null, "nothing due before the first frame");
  assert.equal(b.at(0).seq, 0);
  assert.equal(b.at(0.01), null, "the shown frame is not shown again");
  assert.equal(b.at(1 / 30 - 0.5 / 30 + 1e-9).seq, 1, "frame 1 becomes due half a frame early");
  assert.equal(b.at(0.2).seq, 6, "skips frames the clock has passed (6/30 = 0.2)");
  assert.equal(b.size, 3);
  assert.equal(b.push(frame(3)), false, "a frame older than the shown one is late");
  assert.equal(b.late, 1);
});

test("live playout: latest frame wins", () => {
  const b = new PlayoutBuffer();
  assert.equal(b.latest(), null);
  b.push(frame(0)); b.push(frame(2)); b.push(frame(1));
  assert.equal(b.latest().seq, 2);
  assert.equal(b.size, 0);
});

test("the buffer is bounded, oldest dropped and counted", () => {
  const b = new PlayoutBuffer({ capacity: 3 });
  for (let k = 0; k < 5; k++) b.push(frame(k));
  assert.equal(b.size, 3);
  assert.equal(b.overflowed, 2);
  assert.equal(b.at(10).seq, 4);
});

test("frame counter: seq gaps, reordering and rate", () => {
  const c = new FrameCounter({ windowS: 1 });
  assert.equal(c.add(0, 0.0), 0);
  assert.equal(c.add(1, 0.1), 0);
  assert.equal(c.add(4, 0.2), 2);
  c.add(3, 0.3);
  assert.equal(c.gaps, 2);
  assert.equal(c.reordered, 1);
  assert.equal(c.received, 4);
  assert.equal(c.rate(0.5), 4);
  assert.equal(c.rate(1.15), 2, "arrivals before 0.15 s left the window");
});

test("sliding window percentiles (nearest rank)", () => {
  const w = new SlidingWindow(100);
  assert.ok(Number.isNaN(w.percentile(50)));
  for (let i = 1; i <= 100; i++) w.add(i);
  assert.equal(w.percentile(50), 50);
  assert.equal(w.percentile(95), 95);
  w.add(1000);
  assert.equal(w.count, 100);
  assert.equal(w.percentile(100), 1000);
});

test("backoff doubles, caps and jitters by ±20 %", () => {
  const mid = { random: () => 0.5 };
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelayMs(a, mid)), [500, 1000, 2000, 4000]);
  assert.equal(backoffDelayMs(20, mid), 15000);
  assert.equal(backoffDelayMs(0, { random: () => 0 }), 400);
  assert.equal(backoffDelayMs(0, { random: () => 1 }), 600);
});

test("playout delay covers the first frame's delay plus a margin, within bounds", () => {
  assert.equal(choosePlayoutDelayS(0.2), 0.2 + 0.12);
  assert.equal(choosePlayoutDelayS(0.01), 0.25);
  assert.equal(choosePlayoutDelayS(5), 1.5);
});

test("byte rate: bytes per second over a sliding window", () => {
  const r = new ByteRate({ windowS: 2 });
  assert.equal(r.rate(0), null, "nothing yet");
  r.add(90000, 0); // a ready with the mesh
  assert.equal(r.rate(0.1), 90000 / 0.25, "a short span counts as 0.25 s");
  for (let k = 1; k <= 120; k++) r.add(165, k / 30); // 4 s of coefficient frames at 30 fps
  assert.equal(r.total, 90000 + 120 * 165);
  // At 4 s the window (2, 4] holds 60 frames: the ready has left it.
  assert.equal(r.rate(4), (60 * 165) / 2);
  assert.equal(r.rate(10), 0, "nothing came for 2 s");
});
