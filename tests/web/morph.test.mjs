// node --test tests/web/ : web_client/morph.js, the arithmetic of coefficient frames. The viewer
// measures frames through the Gram matrix and single vertices; both must equal the whole morphed
// mesh (rest + sum_k c[k] * vectors[k], what the GPU draws) computed the long way.
import { test } from "node:test";
import assert from "node:assert/strict";

import { gram, morphAll, morphedVertex, rmsOffset } from "../../web_client/morph.js";

/** Deterministic numbers in [-1, 1) (a small LCG: no Math.random in tests). */
function numbers(count, seed = 1) {
  const out = new Float32Array(count);
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (1103515245 * x + 12345) % 2147483648;
    out[i] = x / 1073741824 - 1;
  }
  return out;
}

const V = 40;
const K = 7;
const rest = numbers(3 * V, 3);
const vectors = numbers(K * 3 * V, 5).map((x) => 0.01 * x);
const coeffs = numbers(K, 7);
coeffs[2] = 0; // zero coefficients are skipped: still exact

test("morphAll is rest + sum_k c[k] * vectors[k]", () => {
  const out = morphAll(rest, vectors, coeffs);
  for (const i of [0, 17, 3 * V - 1]) {
    let want = rest[i];
    for (let k = 0; k < K; k++) want += coeffs[k] * vectors[k * 3 * V + i];
    assert.ok(Math.abs(out[i] - want) < 1e-6, `${i}: ${out[i]} vs ${want}`);
  }
  assert.deepEqual(morphAll(rest, vectors, new Float32Array(K)), rest, "zero coefficients: the rest face");
});

test("morphedVertex equals the morphed mesh at that vertex", () => {
  const all = morphAll(rest, vectors, coeffs);
  for (const i of [0, 9, V - 1]) {
    const v = morphedVertex(rest, vectors, coeffs, i);
    for (let d = 0; d < 3; d++) assert.ok(Math.abs(v[d] - all[3 * i + d]) < 1e-6);
  }
});

test("rmsOffset through the Gram matrix equals the RMS distance of the morphed mesh", () => {
  const g = gram(vectors, K);
  assert.equal(g.length, K * K);
  assert.equal(g[1 * K + 4], g[4 * K + 1], "symmetric");
  const all = morphAll(rest, vectors, coeffs);
  let sq = 0;
  for (let i = 0; i < rest.length; i++) sq += (all[i] - rest[i]) ** 2;
  const want = Math.sqrt(sq / V);
  assert.ok(Math.abs(rmsOffset(g, coeffs, V) - want) < 1e-6 * want, `${rmsOffset(g, coeffs, V)} vs ${want}`);
  assert.equal(rmsOffset(g, new Float32Array(K), V), 0);
});
