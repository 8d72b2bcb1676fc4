// The face: a three.js scene that shows the facecap head (when /assets/facecap.glb loads) or the
// server's template mesh, and applies streamed frames to it.
//
// Two ways to drive it:
// - "vertices" (default): the head is a BufferGeometry built from `ready.mesh` (template + faces),
//   whose positions are replaced by each frame's absolute vertices. When the glTF is loaded and has
//   the same vertex count, the head borrows its material, texture and UVs, and the eyes and teeth
//   are placed by fitting the glTF head's world-space vertices onto the template (scale + offset).
// - "weights": the glTF head itself, its morph target influences set from the frame's ARKit
//   weights (mapped by name: `ready.blendshapes` order is not the glTF's target order).

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { KTX2Loader } from "three/addons/loaders/KTX2Loader.js";
import { MeshoptDecoder } from "three/addons/libs/meshopt_decoder.module.js";

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

    this.gltf = null; // {root, wrapper, head, eyesAndTeeth}
    this.template = null; // {mesh, vertexCount, positions, blendshapes}
    this.mode = "vertices";
    this.faceSource = "none"; // "gltf" | "template+gltf" | "template" | "none"
    this.mouthPair = null; // [upper, lower] vertex indices, when known
    this.weightIndex = null; // ready.blendshapes index -> glTF morph index

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

  /** The server's mesh from `ready`: {vertexCount, template: Float32Array, faces: Uint32Array, blendshapes}. */
  setMesh({ vertexCount, template, faces, blendshapes }) {
    if (this.template) {
      this.scene.remove(this.template.mesh);
      this.template.mesh.geometry.dispose();
    }
    const geometry = new THREE.BufferGeometry();
    const positions = new Float32Array(template); // owned copy: frames overwrite it
    geometry.setAttribute("position", new THREE.BufferAttribute(positions, 3).setUsage(THREE.DynamicDrawUsage));
    geometry.setIndex(new THREE.BufferAttribute(faces, 1));
    geometry.computeVertexNormals();
    geometry.computeBoundingSphere();
    const mesh = new THREE.Mesh(geometry, new THREE.MeshStandardMaterial({ color: SKIN, roughness: 0.62, metalness: 0 }));
    mesh.frustumCulled = false;
    this.template = { mesh, vertexCount, rest: new Float32Array(template), positions, blendshapes };
    this.scene.add(mesh);
    this.rebuild();
  }

  setMode(mode) {
    this.mode = mode === "weights" ? "weights" : "vertices";
    this.rebuild();
  }

  /** Decide what is shown from what is loaded; re-frame the camera. */
  rebuild() {
    const g = this.gltf;
    const t = this.template;
    this.mouthPair = null;
    this.weightIndex = null;
    if (g) {
      g.wrapper.position.set(0, 0, 0);
      g.wrapper.scale.setScalar(1);
      g.wrapper.updateMatrixWorld(true);
    }
    if (g && (!t || this.mode === "weights")) {
      // The glTF alone: idle before `ready`, or driven by weights.
      g.wrapper.visible = true;
      g.head.visible = true;
      if (t) t.mesh.visible = false;
      if (t?.blendshapes) this.weightIndex = t.blendshapes.map((n) => g.morphIndex[arkitName(n)] ?? -1);
      this.faceSource = "gltf";
      this.frame(new THREE.Box3().setFromObject(g.head, true));
      return;
    }
    if (!t) {
      this.faceSource = "none";
      return;
    }
    t.mesh.visible = true;
    const fit = g && count(g.head) === t.vertexCount ? fitScaleOffset(worldPositions(g.head), t.rest) : null;
    if (g && fit && fit.rms < FIT_TOLERANCE * fit.radius) {
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
    t.mesh.geometry.computeBoundingBox();
    this.frame(t.mesh.geometry.boundingBox);
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
   * Show one frame. `vertices`: Float32Array (V*3) or null; `weights`: Float32Array in
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
