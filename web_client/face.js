// The face: a three.js scene that shows the facecap head (when /assets/facecap.glb loads) or the
// server's template mesh, and applies streamed frames to it.
//
// Three ways to drive it:
// - "coeffs" (the viewer's default; protocol v1.1 coefficient frames, K f16 a frame): morph
//   target influences on the GPU, one per `ready.basis.names` entry. Without `basis.vectors` the
//   basis is the facecap head's own ARKit blendshapes: the glTF head itself is shown and
//   `morphTargetInfluences[morphTargetDictionary[name]]` is set (names it lacks are ignored).
//   With `basis.vectors` (any other head or basis), the template mesh gets K relative morph
//   targets built from them (geometry.morphAttributes, morphTargetsRelative).
// - "vertices": the head is a BufferGeometry built from `ready.mesh` (template + faces), whose
//   positions are replaced by each frame's absolute vertices (~16 KB a frame).
// - "weights": vertex frames that also carry ARKit weights; the glTF head itself, its morph
//   target influences set from the weights (mapped by name: `ready.blendshapes` order is not the
//   glTF's target order).
// In "vertices" and "coeffs"-with-vectors, when the glTF is loaded and has the same vertex count,
// the template mesh borrows its material, texture and UVs, and the eyes and teeth are placed by
// fitting the glTF head's world-space vertices onto the template (scale + offset).

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { KTX2Loader } from "three/addons/loaders/KTX2Loader.js";
import { MeshoptDecoder } from "three/addons/libs/meshopt_decoder.module.js";
import { gram, morphedVertex, rmsOffset } from "./morph.js";

const BASIS_PATH = "/node_modules/three/examples/jsm/libs/basis/";
const SKIN = 0xd8a48f;
// The fitted glTF-to-template transform is trusted when its RMS residual is below this fraction
// of the head's radius (a mismatched mesh or a rotated frame gives tens of percent).
const FIT_TOLERANCE = 0.01;
// Half-width of the mid-sagittal strip where the lip-centre vertices are looked for (as models/rig.py).
const MIDLINE_HALF_WIDTH_M = 0.003;

export class FaceView {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true, powerPreference: "high-performance" });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.renderer.toneMapping = THREE.NeutralToneMapping;
    this.renderer.setClearColor(0x15181e, 1);

    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(28, 1, 0.001, 100);
    this.camera.position.set(0, 0, 1);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;
    this.controls.dampingFactor = 0.08;
    this.addLights();

    this.gltf = null; // {root, wrapper, head, morphIndex}
    this.template = null; // {mesh, vertexCount, rest, positions, blendshapes, basis}
    this.mode = "vertices"; // "vertices" | "weights" | "coeffs"
    this.faceSource = "none"; // "gltf" | "template+gltf" | "template" | "none"
    this.mouthPair = null; // [upper, lower] vertex indices, when known
    this.weightIndex = null; // ready.blendshapes index -> glTF morph index
    // Coefficient frames ("coeffs" mode): {mesh (the morphed one), index (basis k -> morph target
    // or -1), scale (mesh world -> template metres), rest, vectors (K*V*3, template frame) and
    // gram (their K×K Gram matrix), for measuring frames on the CPU}; null when not in "coeffs"
    // mode or the basis cannot be shown.
    this.coeff = null;
    this.coeffError = null; // why coefficient frames cannot be shown (main.js falls back)

    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(canvas.parentElement ?? canvas);
    this.resize();
  }

  addLights() {
    this.hemi = new THREE.HemisphereLight(0xeef2ff, 0x40342c, 1.0);
    this.scene.add(this.hemi);
    // Directions (from the head) for key, fill and rim; placed around the head when it is framed.
    this.lights = [
      [new THREE.DirectionalLight(0xfff1e2, 2.8), new THREE.Vector3(1.0, 1.0, 1.5)],
      [new THREE.DirectionalLight(0xd6e4ff, 0.9), new THREE.Vector3(-1.6, 0.2, 1.0)],
      [new THREE.DirectionalLight(0xffffff, 1.2), new THREE.Vector3(-0.4, 1.4, -1.8)],
    ];
    for (const [light] of this.lights) {
      this.scene.add(light);
      this.scene.add(light.target);
    }
  }

  resize() {
    const el = this.canvas.parentElement ?? this.canvas;
    const w = Math.max(1, el.clientWidth);
    const h = Math.max(1, el.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    if (this.box) this.frame(this.box);
    this.dirty = true;
  }

  // ---- loading --------------------------------------------------------------------------------
  /** Load the facecap glTF. Resolves true on success, false when absent or broken (logged). */
  async loadAsset(url) {
    const ktx2 = new KTX2Loader().setTranscoderPath(BASIS_PATH).detectSupport(this.renderer);
    const loader = new GLTFLoader().setKTX2Loader(ktx2).setMeshoptDecoder(MeshoptDecoder);
    try {
      const gltf = await loader.loadAsync(url);
      const root = gltf.scene;
      let head = null;
      root.traverse((o) => {
        if (o.isMesh && o.morphTargetDictionary && (!head || count(o) > count(head))) head = o;
      });
      if (!head) throw new Error("no mesh with morph targets in the glTF");
      const wrapper = new THREE.Group();
      wrapper.add(root);
      this.scene.add(wrapper);
      wrapper.updateMatrixWorld(true);
      const morphIndex = {}; // ARKit name (Apple's spelling) -> glTF morph target index
      for (const [name, k] of Object.entries(head.morphTargetDictionary)) morphIndex[arkitName(name)] = k;
      this.gltf = { root, wrapper, head, morphIndex };
      this.rebuild();
      return true;
    } catch (err) {
      console.warn(`face asset ${url} not loaded: ${err.message ?? err}`);
      return false;
    } finally {
      ktx2.dispose();
    }
  }

  /**
   * The server's mesh from `ready`: {vertexCount, template: Float32Array, faces: Uint32Array,
   * blendshapes, basis}; `basis` (coefficient frames only) is {names, vectors: Float32Array
   * (K*V*3) | null}, else null.
   */
  setMesh({ vertexCount, template, faces, blendshapes, basis = null }) {
    if (this.template) {
      this.scene.remove(this.template.mesh);
      this.template.mesh.geometry.dispose();
    }
    const geometry = new THREE.BufferGeometry();
    const positions = new Float32Array(template); // owned copy: frames overwrite it
    geometry.setAttribute("position", new THREE.BufferAttribute(positions, 3).setUsage(THREE.DynamicDrawUsage));
    geometry.setIndex(new THREE.BufferAttribute(faces, 1));
    geometry.computeVertexNormals();
    if (basis?.vectors) addMorphTargets(geometry, basis.names, basis.vectors);
    geometry.computeBoundingSphere();
    const mesh = new THREE.Mesh(geometry, new THREE.MeshStandardMaterial({ color: SKIN, roughness: 0.62, metalness: 0 }));
    if (basis?.vectors) mesh.updateMorphTargets(); // influences (all 0) and the name dictionary
    mesh.frustumCulled = false;
    this.template = { mesh, vertexCount, rest: new Float32Array(template), positions, blendshapes, basis };
    this.scene.add(mesh);
    this.rebuild();
  }

  setMode(mode) {
    mode = ["weights", "coeffs"].includes(mode) ? mode : "vertices";
    if (mode === this.mode) return;
    this.mode = mode;
    this.rebuild();
  }

  /** Decide what is shown from what is loaded; re-frame the camera. */
  rebuild() {
    const g = this.gltf;
    const t = this.template;
    this.mouthPair = null;
    this.weightIndex = null;
    this.coeff = null;
    this.coeffError = null;
    if (g) {
      g.wrapper.position.set(0, 0, 0);
      g.wrapper.scale.setScalar(1);
      g.wrapper.updateMatrixWorld(true);
      g.head.morphTargetInfluences.fill(0);
    }
    const basis = this.mode === "coeffs" ? t?.basis ?? null : null;
    const fit = g && t && count(g.head) === t.vertexCount ? fitScaleOffset(worldPositions(g.head), t.rest) : null;
    const fits = fit && fit.rms < FIT_TOLERANCE * fit.radius;
    if (this.mode === "coeffs" && t && !basis) this.coeffError = "the server sent no basis for coefficient frames";
    if (basis && !basis.vectors) {
      // The facecap head's own blendshapes: the glTF head must be here, and be the server's head.
      if (!g) this.coeffError = "the basis has no vectors and the face asset (its morph targets) is not loaded";
      else if (!fits) this.coeffError = "the basis has no vectors and the face asset is not the server's head";
      else if (!basis.names.some((n) => g.morphIndex[arkitName(n)] !== undefined)) this.coeffError = "the face asset has none of the basis's morph targets";
    }
    if (g && (!t || this.mode === "weights" || (basis && !basis.vectors && !this.coeffError))) {
      // The glTF alone: idle before `ready`, driven by weights, or by its own blendshapes.
      g.wrapper.visible = true;
      g.head.visible = true;
      if (t) t.mesh.visible = false;
      if (t?.blendshapes) this.weightIndex = t.blendshapes.map((n) => g.morphIndex[arkitName(n)] ?? -1);
      if (basis) {
        this.mouthPair = findMouthPair(g.head, g.morphIndex, t.rest, fit.scale);
        this.coeff = gltfCoeffs(g, basis.names, t.rest, fit.scale);
      }
      this.faceSource = "gltf";
      this.frame(new THREE.Box3().setFromObject(g.head, true));
      return;
    }
    if (!t) {
      this.faceSource = "none";
      return;
    }
    t.mesh.visible = true;
    if (g && fits) {
      // Same head: borrow the texture and UVs; place eyes and teeth on the template.
      g.wrapper.scale.setScalar(fit.scale);
      g.wrapper.position.copy(fit.offset);
      g.wrapper.updateMatrixWorld(true);
      g.wrapper.visible = true;
      g.head.visible = false;
      const uv = g.head.geometry.getAttribute("uv");
      if (uv) t.mesh.geometry.setAttribute("uv", uv.clone());
      t.mesh.material = g.head.material;
      this.mouthPair = findMouthPair(g.head, g.morphIndex, t.rest, fit.scale);
      this.faceSource = "template+gltf";
    } else {
      if (g) {
        g.wrapper.visible = false;
        if (fit) console.warn(`glTF head does not fit the server template (rms ${fit.rms.toExponential(2)}); showing the template only`);
      }
      t.mesh.geometry.deleteAttribute("uv");
      t.mesh.material = new THREE.MeshStandardMaterial({ color: SKIN, roughness: 0.62, metalness: 0, side: THREE.DoubleSide });
      this.faceSource = "template";
    }
    if (t.mesh.morphTargetInfluences) t.mesh.morphTargetInfluences.fill(0);
    if (basis?.vectors) {
      const index = Int32Array.from(basis.names, (_, k) => k);
      this.coeff = { mesh: t.mesh, index, scale: 1, rest: t.rest, vectors: basis.vectors, gram: gram(basis.vectors, index.length) };
    }
    // The rest face's box: three.js's own (computeBoundingBox) would grow by every morph target.
    this.frame(new THREE.Box3().setFromArray(t.rest));
  }

  /** Point the camera at the head so that its box fills the view (with a margin); place the lights. */
  frame(box) {
    if (!box || box.isEmpty()) return;
    this.box = box.clone();
    const center = box.getCenter(new THREE.Vector3());
    const size = box.getSize(new THREE.Vector3());
    const radius = size.length() / 2;
    const vfov = THREE.MathUtils.degToRad(this.camera.fov);
    const tanV = Math.tan(vfov / 2);
    const tanH = tanV * this.camera.aspect;
    // Distance from the front of the box at which its height and width both fit, 12 % margin.
    const fit = Math.max((size.y * 1.12) / 2 / tanV, (size.x * 1.12) / 2 / tanH);
    const dist = fit + size.z / 2;
    this.camera.position.set(center.x, center.y + size.y * 0.03, center.z + dist);
    this.camera.near = dist / 50;
    this.camera.far = dist * 20;
    this.camera.updateProjectionMatrix();
    this.controls.target.copy(center);
    this.controls.minDistance = radius * 0.5;
    this.controls.maxDistance = dist * 4;
    this.controls.update();
    this.dirty = true;
    for (const [light, dir] of this.lights) {
      light.position.copy(center).addScaledVector(dir, radius * 4);
      light.target.position.copy(center);
      light.target.updateMatrixWorld();
    }
  }

  // ---- frames ---------------------------------------------------------------------------------
  /**
   * {mouth, motion} of a frame's vertices: the lip-centre distance (metres, null when the lip
   * vertices are unknown) and the RMS distance from the template (mm).
   */
  measure(vertices) {
    const t = this.template;
    if (!t || vertices.length !== t.rest.length) return { mouth: null, motion: null };
    return measure(vertices, t.rest, this.mouthPair);
  }

  /**
   * {mouth, motion} of a coefficient frame, as measure() gives for the vertices it stands for
   * (rest + sum_k coeffs[k] * vectors[k], what the GPU draws), without building them: the two
   * lip vertices, and the RMS offset through the basis's Gram matrix (morph.js).
   */
  measureCoeffs(coeffs) {
    const c = this.coeff;
    if (!c || coeffs.length !== c.index.length) return { mouth: null, motion: null };
    const motion = 1000 * rmsOffset(c.gram, coeffs, c.rest.length / 3);
    const pair = this.mouthPair;
    if (!pair) return { mouth: null, motion };
    const a = morphedVertex(c.rest, c.vectors, coeffs, pair[0]);
    const b = morphedVertex(c.rest, c.vectors, coeffs, pair[1]);
    return { mouth: Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]), motion };
  }

  /** Show one coefficient frame (Float32Array in `ready.basis.names` order) as morph influences. */
  showCoeffs(coeffs) {
    const c = this.coeff;
    if (!c || this.mode !== "coeffs") return;
    const infl = c.mesh.morphTargetInfluences;
    for (let k = 0; k < c.index.length; k++) {
      const j = c.index[k];
      if (j >= 0) infl[j] = coeffs[k];
    }
    this.dirty = true;
  }

  /** Back to the neutral face: influences 0, the template's positions. */
  rest() {
    this.gltf?.head.morphTargetInfluences.fill(0);
    const t = this.template;
    if (t) {
      t.mesh.morphTargetInfluences?.fill(0);
      t.positions.set(t.rest);
      t.mesh.geometry.attributes.position.needsUpdate = true;
      t.mesh.geometry.computeVertexNormals();
    }
    this.dirty = true;
  }

  /**
   * Lip-centre distance (metres) of the face as it is drawn, read back from the shown mesh
   * (three.js applies its morph targets on the CPU: Mesh.getVertexPosition); null when unknown.
   */
  shownMouth() {
    const pair = this.mouthPair;
    const mesh = this.coeff?.mesh ?? (this.mode === "vertices" ? this.template?.mesh : null);
    if (!pair || !mesh) return null;
    mesh.updateWorldMatrix(true, false);
    const a = mesh.getVertexPosition(pair[0], new THREE.Vector3()).applyMatrix4(mesh.matrixWorld);
    const b = mesh.getVertexPosition(pair[1], new THREE.Vector3()).applyMatrix4(mesh.matrixWorld);
    return a.distanceTo(b) * (this.coeff?.scale ?? 1);
  }

  /**
   * Draw now, off screen, and return the picture as grey levels, one per `step` CSS pixels in x and
   * y: {width, height, grey: number[]} (for tests comparing two faces). The size depends only on
   * the stage's CSS size, not on the pixel ratio that reduceResolution() lowers on slow GL.
   */
  snapshot(step = 4) {
    const el = this.canvas.parentElement ?? this.canvas;
    const w = Math.max(1, Math.ceil(el.clientWidth / step));
    const h = Math.max(1, Math.ceil(el.clientHeight / step));
    const target = new THREE.WebGLRenderTarget(w, h);
    const rgba = new Uint8Array(w * h * 4);
    try {
      this.renderer.setRenderTarget(target);
      this.renderer.render(this.scene, this.camera);
      this.renderer.readRenderTargetPixels(target, 0, 0, w, h, rgba);
    } finally {
      this.renderer.setRenderTarget(null);
      target.dispose();
    }
    const grey = new Array(w * h);
    for (let i = 0; i < w * h; i++) {
      grey[i] = Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]);
    }
    return { width: w, height: h, grey };
  }

  /**
   * Show one vertex frame. `vertices`: Float32Array (V*3) or null; `weights`: Float32Array in
   * `ready.blendshapes` order, or null.
   */
  show(vertices, weights) {
    const t = this.template;
    if (this.mode === "weights" && weights && this.gltf && this.weightIndex) {
      const infl = this.gltf.head.morphTargetInfluences;
      for (let i = 0; i < this.weightIndex.length; i++) {
        const k = this.weightIndex[i];
        if (k >= 0) infl[k] = weights[i];
      }
      this.dirty = true;
    }
    if (!t || !vertices || vertices.length !== t.positions.length || this.mode !== "vertices") return;
    t.positions.set(vertices);
    const geom = t.mesh.geometry;
    geom.attributes.position.needsUpdate = true;
    geom.computeVertexNormals();
    this.dirty = true;
  }

  /** Lower the drawing resolution (slow GPUs, software GL): returns the new pixel ratio. */
  reduceResolution(factor = 0.75, min = 0.4) {
    const pr = this.renderer.getPixelRatio();
    if (pr <= min) return pr;
    this.renderer.setPixelRatio(Math.max(min, pr * factor));
    this.resize();
    return this.renderer.getPixelRatio();
  }

  /** Draw when something changed (a frame, the camera, the size): idle pages cost nothing. */
  render() {
    const moved = this.controls.update();
    if (!moved && !this.dirty) return false;
    this.dirty = false;
    const t0 = performance.now();
    this.renderer.render(this.scene, this.camera);
    this.renderMs = 0.9 * (this.renderMs ?? 0) + 0.1 * (performance.now() - t0);
    return true;
  }
}

// ---- geometry helpers --------------------------------------------------------------------------
/**
 * K relative morph targets on `geometry` from `vectors` (K*V*3, metres per unit coefficient),
 * named by `names`, with normal deltas (the normals of template + vectors[k], minus the
 * template's, as glTF morph normals are) so that the shading follows the motion.
 */
function addMorphTargets(geometry, names, vectors) {
  const rest = geometry.getAttribute("position").array;
  const restNormals = geometry.getAttribute("normal").array;
  const index = geometry.getIndex().array;
  const n = rest.length;
  const moved = new Float32Array(n);
  geometry.morphAttributes.position = [];
  geometry.morphAttributes.normal = [];
  names.forEach((name, k) => {
    const delta = vectors.subarray(k * n, (k + 1) * n);
    const p = new THREE.BufferAttribute(delta, 3);
    p.name = name;
    geometry.morphAttributes.position.push(p);
    for (let i = 0; i < n; i++) moved[i] = rest[i] + delta[i];
    const normals = vertexNormals(moved, index);
    for (let i = 0; i < n; i++) normals[i] -= restNormals[i];
    const nAttr = new THREE.BufferAttribute(normals, 3);
    nAttr.name = name;
    geometry.morphAttributes.normal.push(nAttr);
  });
  geometry.morphTargetsRelative = true;
}

/** Unit area-weighted vertex normals of an indexed triangle mesh (as computeVertexNormals). */
function vertexNormals(p, index) {
  const out = new Float32Array(p.length);
  for (let f = 0; f < index.length; f += 3) {
    const a = 3 * index[f];
    const b = 3 * index[f + 1];
    const c = 3 * index[f + 2];
    const ux = p[b] - p[a]; const uy = p[b + 1] - p[a + 1]; const uz = p[b + 2] - p[a + 2];
    const vx = p[c] - p[a]; const vy = p[c + 1] - p[a + 1]; const vz = p[c + 2] - p[a + 2];
    const nx = uy * vz - uz * vy; const ny = uz * vx - ux * vz; const nz = ux * vy - uy * vx;
    for (const i of [a, b, c]) {
      out[i] += nx;
      out[i + 1] += ny;
      out[i + 2] += nz;
    }
  }
  for (let i = 0; i < out.length; i += 3) {
    const len = Math.hypot(out[i], out[i + 1], out[i + 2]) || 1;
    out[i] /= len;
    out[i + 1] /= len;
    out[i + 2] /= len;
  }
  return out;
}

/**
 * Coefficient frames on the glTF head's own morph targets: basis k -> glTF target index (-1 for a
 * name the head lacks), and the targets in the template's frame (world linear part, then the fit
 * scale), in basis order, so that frames can be measured where the server's template lives.
 */
function gltfCoeffs(g, names, rest, scale) {
  const head = g.head;
  head.updateWorldMatrix(true, false);
  const linear = new THREE.Matrix3().setFromMatrix4(head.matrixWorld);
  const morphs = head.geometry.morphAttributes.position;
  const n = rest.length;
  const index = Int32Array.from(names, (name) => g.morphIndex[arkitName(name)] ?? -1);
  const vectors = new Float32Array(names.length * n);
  const v = new THREE.Vector3();
  index.forEach((j, k) => {
    if (j < 0) return;
    const attr = morphs[j];
    for (let i = 0; i < n / 3; i++) {
      v.fromBufferAttribute(attr, i).applyMatrix3(linear).multiplyScalar(scale);
      vectors[k * n + 3 * i] = v.x;
      vectors[k * n + 3 * i + 1] = v.y;
      vectors[k * n + 3 * i + 2] = v.z;
    }
  });
  return { mesh: head, index, scale, rest, vectors, gram: gram(vectors, names.length) };
}
/** facecap spells ARKit names "jawOpen", "eyeBlink_L"; Apple (and `ready.blendshapes`) "eyeBlinkLeft". */
export const arkitName = (name) => name.replace(/_L$/, "Left").replace(/_R$/, "Right");

const count = (mesh) => mesh.geometry.getAttribute("position").count;

/** World-space base positions of a mesh (V*3), with every node transform applied. */
function worldPositions(mesh) {
  mesh.updateWorldMatrix(true, false);
  const attr = mesh.geometry.getAttribute("position");
  const out = new Float32Array(attr.count * 3);
  const v = new THREE.Vector3();
  for (let i = 0; i < attr.count; i++) {
    v.fromBufferAttribute(attr, i).applyMatrix4(mesh.matrixWorld);
    out[3 * i] = v.x;
    out[3 * i + 1] = v.y;
    out[3 * i + 2] = v.z;
  }
  return out;
}

function centroid(p) {
  const c = new THREE.Vector3();
  const n = p.length / 3;
  for (let i = 0; i < p.length; i += 3) c.set(c.x + p[i], c.y + p[i + 1], c.z + p[i + 2]);
  return c.multiplyScalar(1 / n);
}

/**
 * The scale s and offset o minimising |s*a + o - b| (no rotation: both are y-up, facing +z), with
 * the RMS residual and b's RMS radius, so the caller can tell whether a and b are the same head.
 */
export function fitScaleOffset(a, b) {
  const ca = centroid(a);
  const cb = centroid(b);
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < a.length; i += 3) {
    saa += (a[i] - ca.x) ** 2 + (a[i + 1] - ca.y) ** 2 + (a[i + 2] - ca.z) ** 2;
    sbb += (b[i] - cb.x) ** 2 + (b[i + 1] - cb.y) ** 2 + (b[i + 2] - cb.z) ** 2;
  }
  const scale = Math.sqrt(sbb / saa);
  let err = 0;
  for (let i = 0; i < a.length; i += 3) {
    err += (scale * (a[i] - ca.x) - (b[i] - cb.x)) ** 2 + (scale * (a[i + 1] - ca.y) - (b[i + 1] - cb.y)) ** 2 +
      (scale * (a[i + 2] - ca.z) - (b[i + 2] - cb.z)) ** 2;
  }
  const n = a.length / 3;
  const offset = cb.clone().addScaledVector(ca, -scale);
  return { scale, offset, rms: Math.sqrt(err / n), radius: Math.sqrt(sbb / n) };
}

/**
 * (upper, lower) lip-centre vertex indices, by the rule of models/rig.py find_mouth_open_pair:
 * on the mid-sagittal strip, the vertex mouthUpperUp* raises most and the one mouthLowerDown*
 * lowers most. Deltas are taken to the template's frame (glTF world linear part, then the fit scale).
 */
function findMouthPair(head, dict, template, scale) {
  const morphs = head.geometry.morphAttributes.position;
  const names = ["mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight"];
  if (!morphs || names.some((n) => dict[n] === undefined)) return null;
  const linear = new THREE.Matrix3().setFromMatrix4(head.matrixWorld);
  const n = template.length / 3;
  const up = new Float32Array(n);
  const down = new Float32Array(n);
  const v = new THREE.Vector3();
  names.forEach((name, j) => {
    const attr = morphs[dict[name]];
    const dst = j < 2 ? up : down;
    for (let i = 0; i < n; i++) dst[i] += v.fromBufferAttribute(attr, i).applyMatrix3(linear).y * scale;
  });
  let wsum = 0;
  let xsum = 0;
  for (let i = 0; i < n; i++) {
    const w = Math.abs(up[i]) + Math.abs(down[i]);
    wsum += w;
    xsum += w * template[3 * i];
  }
  if (wsum <= 0) return null;
  const xm = xsum / wsum;
  let upper = -1;
  let lower = -1;
  for (let i = 0; i < n; i++) {
    if (Math.abs(template[3 * i] - xm) >= MIDLINE_HALF_WIDTH_M) continue;
    if (upper < 0 || up[i] > up[upper]) upper = i;
    if (lower < 0 || -down[i] > -down[lower]) lower = i;
  }
  return upper >= 0 && lower >= 0 ? [upper, lower] : null;
}

function measure(vertices, rest, pair) {
  let sq = 0;
  for (let i = 0; i < rest.length; i++) sq += (vertices[i] - rest[i]) ** 2;
  const motion = 1000 * Math.sqrt(sq / (rest.length / 3));
  if (!pair) return { mouth: null, motion };
  const [a, b] = pair;
  const mouth = Math.hypot(vertices[3 * a] - vertices[3 * b], vertices[3 * a + 1] - vertices[3 * b + 1], vertices[3 * a + 2] - vertices[3 * b + 2]);
  return { mouth, motion };
}
