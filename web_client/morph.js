// The arithmetic of coefficient frames (protocol v1.1): vertices = rest + sum_k c[k] * vectors[k],
// with `rest` V*3 and `vectors` K*V*3 flat (target k at [k*V*3, (k+1)*V*3)). The GPU draws the
// morphed face; the viewer measures every frame here without building it: the RMS offset from
// rest through the K×K Gram matrix (K² operations instead of K*V*3), and single vertices.
// Pure functions, no DOM and no three.js (tests/web/morph.test.mjs).

/** The K×K Gram matrix of the vectors, G[j*K + k] = <vectors[j], vectors[k]> (float64). */
export function gram(vectors, k) {
  const n = vectors.length / k;
  const g = new Float64Array(k * k);
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let s = 0;
      for (let i = 0, ia = a * n, ib = b * n; i < n; i++, ia++, ib++) s += vectors[ia] * vectors[ib];
      g[a * k + b] = s;
      g[b * k + a] = s;
    }
  }
  return g;
}

/**
 * RMS distance of the morphed vertices from rest, in the vectors' unit:
 * sqrt(|sum_k c[k] vectors[k]|² / V) = sqrt(cᵀ G c / V).
 */
export function rmsOffset(g, c, vertexCount) {
  const k = c.length;
  let s = 0;
  for (let a = 0; a < k; a++) {
    if (c[a] === 0) continue;
    let row = 0;
    for (let b = 0; b < k; b++) row += g[a * k + b] * c[b];
    s += c[a] * row;
  }
  return Math.sqrt(Math.max(0, s) / vertexCount);
}

/** Vertex `i` of rest + c·vectors, as [x, y, z] (in `out` when given). */
export function morphedVertex(rest, vectors, c, i, out = [0, 0, 0]) {
  const n = rest.length;
  for (let d = 0; d < 3; d++) {
    let x = rest[3 * i + d];
    for (let k = 0; k < c.length; k++) x += c[k] * vectors[k * n + 3 * i + d];
    out[d] = x;
  }
  return out;
}

/** The whole morphed mesh (V*3) into `out`: what the GPU draws, for tests and tools. */
export function morphAll(rest, vectors, c, out = new Float32Array(rest.length)) {
  const n = rest.length;
  out.set(rest);
  for (let k = 0; k < c.length; k++) {
    const w = c[k];
    if (w === 0) continue;
    for (let i = 0, j = k * n; i < n; i++, j++) out[i] += w * vectors[j];
  }
  return out;
}
