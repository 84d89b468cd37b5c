/**
 * WGSL sources of the WebGPU backend. Every kernel has its parameters at binding 0: a typed
 * uniform struct `U` declared once with {@link struct} next to the kernel, which generates both
 * the WGSL declaration and the host-side packer (`STRUCT.pack({...})` in backend.ts), so host and
 * shader cannot disagree on a field's position or type. `U.groups` is the number of workgroups of
 * the dispatch. Kernels have `nStorage` read-write storage buffers at bindings 1..n. Storage
 * bindings are ranges of tensors (see split.ts), so every index is offset by a `...Base`
 * parameter. All storage bindings are read_write so that the same buffer may be bound more than
 * once in a dispatch.
 * Where the CPU oracle accumulates in float64, kernels use compensated (Kahan) f32 summation.
 */
import { type ParamStruct, struct } from "./engine.ts";

export { struct };

export interface KernelSource {
  code: string;
  nStorage: number;
}

const PRELUDE = /* wgsl */ `
fn wgLin(w: vec3<u32>, n: vec3<u32>) -> u32 { return w.x + w.y * n.x; }
// Order-preserving u32 key of a float's bits, and its inverse.
fn fkey(b: u32) -> u32 { return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u); }
fn keyBits(k: u32) -> u32 { return select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u); }
fn isFinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
// Sample position q of a strided sample with stride st, jittered (hash of q) inside its stride so
// that periodic data (a [B, ω] matrix, a periodic mask) cannot alias with the stride.
fn samplePos(q: u32, st: u32) -> u32 { return q * st + ((q * 2654435761u) >> 16u) % st; }
`;

const ENTRY = `@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) li: u32`;

function decl(names: [string, string][]): string {
  return names.map(([n, t], i) => `@group(0) @binding(${i + 1}) var<storage, read_write> ${n}: array<${t}>;`)
    .join("\n");
}

// deno-lint-ignore no-explicit-any
export function src(params: ParamStruct<any>, bufs: [string, string][], body: string): KernelSource {
  return { code: params.wgsl() + PRELUDE + decl(bufs) + "\n" + body, nStorage: bufs.length };
}

/** Shared-memory tree sum over a workgroup of size WG (call from uniform control flow). */
function treeSum(wg: number, name = "red"): string {
  return `
var<workgroup> ${name}: array<f32, ${wg}>;
fn ${name}Sum(li: u32, v: f32) -> f32 {
  ${name}[li] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { ${name}[li] = ${name}[li] + ${name}[li + s]; }
    workgroupBarrier();
  }
  let r = ${name}[0];
  workgroupBarrier();
  return r;
}`;
}

// ---- memory ---------------------------------------------------------------------------------

export const FILL = struct("FillParams", { n: "u32", base: "u32", bits: "u32" });

/** a[base + i] = value bits, i < n. */
export function fillKernel(): KernelSource {
  return src(
    FILL,
    [["a", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i < U.n) { a[U.base + i] = U.bits; }
}`,
  );
}

// ---- encoder matmul -------------------------------------------------------------------------

export const ENCODE = struct("EncodeParams", {
  B: "u32",
  w: "u32",
  dv: "u32",
  xBase: "u32",
  wBase: "u32",
  bencBase: "u32",
  bdecBase: "u32",
  preBase: "u32",
  preStride: "u32",
});

/**
 * pre[b, j] = relu(Σ_k (x[b,k] − bdec[k]) · W[j,k] + benc[j]): register-blocked, no workgroup
 * memory. Each invocation computes 8 rows × 16 latents (rows rb + 8r, latents cb + 8c);
 * workgroups are 8×8 invocations = 64 rows × 128 latents. `vec` = 4 loads vec4 (needs d % 4 == 0).
 */
export function encodeKernel(vec: boolean): KernelSource {
  const R = 8, C = 16;
  const T = vec ? "vec4<f32>" : "f32";
  const mul = (a: string, b: string) => vec ? `dot(${a}, ${b})` : `${a} * ${b}`;
  let s = "";
  for (let r = 0; r < R; r++) s += `  let xo${r} = U.xBase + min(rb + ${r * 8}u, B - 1u) * dv;\n`;
  for (let c = 0; c < C; c++) s += `  let wo${c} = U.wBase + min(cb + ${c * 8}u, W - 1u) * dv;\n`;
  for (let r = 0; r < R; r++) {
    s += "  var " + Array.from({ length: C }, (_, c) => `a${r}_${c} = 0.0`).join("; var ") + ";\n";
  }
  s += `  let bdb = U.bdecBase;\n  for (var k = 0u; k < dv; k = k + 1u) {\n    let bd = bdec[bdb + k];\n`;
  for (let r = 0; r < R; r++) s += `    let x${r} = X[xo${r} + k] - bd;\n`;
  for (let c = 0; c < C; c++) {
    s += `    { let w = Wm[wo${c} + k];`;
    for (let r = 0; r < R; r++) s += ` a${r}_${c} += ${mul(`x${r}`, "w")};`;
    s += " }\n";
  }
  s += "  }\n  let pb = U.preBase; let ps = U.preStride; let bb = U.bencBase;\n";
  for (let c = 0; c < C; c++) {
    s += `  if (cb + ${c * 8}u < W) {\n    let j = cb + ${c * 8}u; let be = benc[bb + j];\n`;
    for (let r = 0; r < R; r++) {
      s += `    if (rb + ${r * 8}u < B) { let v = a${r}_${c} + be; ` +
        `pre[pb + (rb + ${r * 8}u) * ps + j] = select(0.0, v, v > 0.0); }\n`;
    }
    s += "  }\n";
  }
  return src(
    ENCODE,
    [["X", T], ["Wm", T], ["benc", "f32"], ["bdec", T], ["pre", "f32"]],
    `
@compute @workgroup_size(8, 8) fn main(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>) {
  let B = U.B; let W = U.w; let dv = U.dv;
  let rb = wid.y * 64u + lid.y;
  let cb = wid.x * 128u + lid.x;
${s}}`,
  );
}

/**
 * Per-invocation 2-slot cache of (bin, count) in front of a shared atomic histogram: data often
 * concentrate on a couple of bins (zeros after ReLU, one exponent range), and every atomic is a
 * locked read-modify-write on a software adapter.
 */
function binCache(hist: string): string {
  return `
      if (bin == c0) { n0 = n0 + 1u; } else if (bin == c1) {
        n1 = n1 + 1u;
        if (n1 > n0) { let tc = c0; let tn = n0; c0 = c1; n0 = n1; c1 = tc; n1 = tn; }
      } else {
        if (n1 != 0u) { atomicAdd(&${hist}[c1], n1); }
        c1 = bin;
        n1 = 1u;
      }`;
}
const BIN_CACHE_INIT = "var c0 = 0xffffffffu; var n0 = 0u; var c1 = 0xfffffffeu; var n1 = 0u;";
function binCacheFlush(hist: string): string {
  return `if (n0 != 0u) { atomicAdd(&${hist}[c0], n0); }
  if (n1 != 0u) { atomicAdd(&${hist}[c1], n1); }`;
}

// ---- k-th largest ---------------------------------------------------------------------------

/**
 * Exact k-th largest over a whole tensor. Radix select over the order-preserving keys with three
 * digits (11 + 11 + 10 bits), usually on a small candidate set: a strided sample of the data gives
 * a threshold a bit below the expected k-th largest, one compare-only pass appends the keys at or
 * above it to a candidate buffer, and when there are at least k of them (and they fit) the three
 * digits are resolved on the candidates; otherwise (a rare bad sample, or a threshold in a huge
 * tie such as the zeros after ReLU) on the full data. Either way the result is exact. State in
 * `hs` (u32): [0, 2048) histogram, then the words below.
 */
export const KTH = {
  BINS: 2048,
  PREFIX: 2048,
  REM: 2049,
  NCAND: 2050,
  TBITS: 2051,
  OK: 2052,
  WORDS: 2053,
} as const;

export const KTH_INIT = struct("KthInitParams", { k: "u32" });

/** Reset the select state: histogram 0, prefix 0, remaining k. */
export function kthInitKernel(): KernelSource {
  return src(
    KTH_INIT,
    [["hs", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  for (var i = li; i < ${KTH.BINS}u; i = i + 256u) { hs[i] = 0u; }
  if (li == 0u) {
    hs[${KTH.PREFIX}u] = 0u; hs[${KTH.REM}u] = U.k; hs[${KTH.NCAND}u] = 0u; hs[${KTH.OK}u] = 0u;
  }
}`,
  );
}

export const KTH_SAMPLE = struct("KthSampleParams", {
  m: "u32",
  j0: "u32",
  stride: "u32",
  baseShift: "u32",
  sampleBase: "u32",
  chunkEnd: "u32",
});

/** sample[j] = vals[base + min(samplePos(j, stride), chunkEnd − 1) − chunkStart] for j in
 * [j0, j0 + m).  */
export function kthSampleKernel(): KernelSource {
  return src(
    KTH_SAMPLE,
    [["vals", "u32"], ["sample", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let q = wgLin(wid, nwg) * 256u + li;
  if (q >= U.m) { return; }
  let j = U.j0 + q;
  sample[U.sampleBase + j] = vals[min(samplePos(j, U.stride), U.chunkEnd - 1u) + U.baseShift];
}`,
  );
}

export const KTH_COMPACT = struct("KthCompactParams", { n: "u32", base: "u32", cap: "u32", epw: "u32" });

/**
 * Append the keys of vals[base + i] (i < n) at or above the sampled threshold to the candidate
 * buffer (counting all of them, even past the capacity).
 */
export function kthCompactKernel(): KernelSource {
  return src(
    KTH_COMPACT,
    [["vals", "u32"], ["hs", "atomic<u32>"], ["cand", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let t = fkey(atomicLoad(&hs[${KTH.TBITS}u]));
  let epw = U.epw; let base = U.base; let cap = U.cap;
  let start = g * epw; let end = min(start + epw, U.n);
  for (var i = start + li; i < end; i = i + 256u) {
    let key = fkey(vals[base + i]);
    if (key >= t) {
      let p = atomicAdd(&hs[${KTH.NCAND}u], 1u);
      if (p < cap) { cand[p] = key; }
    }
  }
}`,
  );
}

export const KTH_DECIDE = struct("KthDecideParams", { cap: "u32" });

/** hs[OK] = (k <= ncand <= capacity). */
export function kthDecideKernel(): KernelSource {
  return src(
    KTH_DECIDE,
    [["hs", "u32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  let nc = hs[${KTH.NCAND}u];
  hs[${KTH.OK}u] = select(0u, 1u, nc >= hs[${KTH.REM}u] && nc <= U.cap);
}`,
  );
}

export const KTH_HIST = struct("KthHistParams", {
  n: "u32",
  base: "u32",
  shift: "u32",
  highMask: "u32",
  epw: "u32",
  digitMask: "u32",
  source: "u32",
});

/**
 * Histogram of one digit of the keys whose higher digits equal the prefix found so far:
 * per-workgroup shared histogram, then atomics into the global one. Source (param 6): 1 = the
 * data vals[base + i], i < n, when the candidate path failed; 2 = the candidates cand[i],
 * i < ncand, when it succeeded.
 */
export function kthHistKernel(): KernelSource {
  const bins = KTH.BINS;
  return src(
    KTH_HIST,
    [["vals", "u32"], ["hs", "atomic<u32>"], ["cand", "u32"]],
    `
var<workgroup> lh: array<atomic<u32>, ${bins}>;
var<workgroup> sN: u32;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let srcKind = U.source;
  if (li == 0u) {
    let ok = atomicLoad(&hs[${KTH.OK}u]) != 0u;
    var nn = U.n;
    if (srcKind == 2u) { nn = atomicLoad(&hs[${KTH.NCAND}u]); }
    if ((srcKind == 1u && ok) || (srcKind == 2u && !ok)) { nn = 0u; }
    sN = nn;
  }
  let n = workgroupUniformLoad(&sN); // uniform: the early exit below precedes barriers
  let epw = U.epw;
  let start = g * epw;
  if (start >= n) { return; }
  for (var i = li; i < ${bins}u; i = i + 256u) { atomicStore(&lh[i], 0u); }
  workgroupBarrier();
  let base = U.base; let shift = U.shift; let hm = U.highMask; let dm = U.digitMask;
  let prefix = atomicLoad(&hs[${KTH.PREFIX}u]);
  let end = min(start + epw, n);
  ${BIN_CACHE_INIT}
  for (var i = start + li; i < end; i = i + 256u) {
    var key = 0u;
    if (srcKind == 2u) { key = cand[i]; } else { key = fkey(vals[base + i]); }
    if ((key & hm) == prefix) {
      let bin = (key >> shift) & dm;${binCache("lh")}
    }
  }
  ${binCacheFlush("lh")}
  workgroupBarrier();
  for (var i = li; i < ${bins}u; i = i + 256u) {
    let c = atomicLoad(&lh[i]);
    if (c != 0u) { atomicAdd(&hs[i], c); }
  }
}`,
  );
}

export const KTH_SELECT = struct("KthSelectParams", { shift: "u32", last: "bool", outBase: "u32" });

/**
 * Pick the digit: walk bins from the top, subtracting counts until the bin holding the
 * remaining-th largest; update prefix/remaining; clear the histogram. On the last digit write
 * the selected float to out[outBase] (as bits).
 */
export function kthSelectKernel(): KernelSource {
  return src(
    KTH_SELECT,
    [["hs", "u32"], ["out", "u32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  var rem = hs[${KTH.REM}u];
  var b = ${KTH.BINS - 1}u;
  loop {
    if (b == 0u) { break; }
    let h = hs[b];
    if (h >= rem) { break; }
    rem = rem - h;
    b = b - 1u;
  }
  let prefix = hs[${KTH.PREFIX}u] | (b << U.shift);
  hs[${KTH.PREFIX}u] = prefix;
  hs[${KTH.REM}u] = rem;
  for (var i = 0u; i < ${KTH.BINS}u; i = i + 1u) { hs[i] = 0u; }
  if (U.last == 1u) { out[U.outBase] = keyBits(prefix); }
}`,
  );
}

export const KTH_ROWS = struct("KthRowsParams", {
  nRows: "u32",
  w: "u32",
  valBase: "u32",
  k: "u32",
  useMask: "bool",
  maskBase: "u32",
  outBase: "u32",
  rank: "u32",
});

/**
 * Per-row k-th largest among eligible columns; one workgroup per row (64 invocations: workgroup
 * barriers and workgroup-memory atomics are expensive on software adapters, so both are kept few).
 *  1. A strided sample of the row (up to 1024 columns; ineligible ones get key 0, below every
 *     float) gives a threshold t a bit below the expected k-th largest: the first two radix digits
 *     of the sample's rank-th largest (`rank` from the host).
 *  2. One compare-only pass collects the eligible keys >= t in workgroup memory.
 *  3. With k <= #candidates <= 1024 the k-th largest is found among them: by rank counting
 *     (no atomics) for up to 512 candidates, else by radix select (11 + 11 + 10 bits); otherwise
 *     by radix select over the row (three passes).
 */
export function kthRowsKernel(): KernelSource {
  const CAND = 1024, WG = 64, BPT = 2048 / WG, RANK_MAX = 512;
  return src(
    KTH_ROWS,
    [["vals", "u32"], ["mask", "u32"], ["out", "u32"]],
    `
var<workgroup> lh: array<atomic<u32>, 2048>;
var<workgroup> cand: array<u32, ${CAND}>;
var<workgroup> ncand: atomic<u32>;
var<workgroup> psum: array<u32, ${WG}>;
var<workgroup> sPrefix: u32;
var<workgroup> sRem: u32;
var<workgroup> sBad: u32;
var<workgroup> sN: u32;

fn clearHist(li: u32) {
  for (var i = li; i < 2048u; i = i + ${WG}u) { atomicStore(&lh[i], 0u); }
}

fn digitShift(dg: u32) -> u32 { return select(select(0u, 10u, dg == 1u), 21u, dg == 0u); }
fn digitHigh(dg: u32) -> u32 { return select(select(0xfffffc00u, 0xffe00000u, dg == 1u), 0u, dg == 0u); }
fn digitMask(dg: u32) -> u32 { return select(0x7ffu, 0x3ffu, dg == 2u); }

// Choose the bin of the current digit (${BPT} bins summed per invocation, then one walk). On the
// first digit, flag too few keys (k > total) or k < 1.
fn selectBin(li: u32, shift: u32, first: bool, k: u32) {
  var s = 0u;
  for (var q = 0u; q < ${BPT}u; q = q + 1u) { s = s + atomicLoad(&lh[li * ${BPT}u + q]); }
  psum[li] = s;
  workgroupBarrier();
  if (li == 0u) {
    var rem = sRem;
    if (first) {
      var total = 0u;
      for (var i = 0u; i < ${WG}u; i = i + 1u) { total = total + psum[i]; }
      if (k < 1u || k > total) { sBad = 1u; }
    }
    var gi = ${WG - 1}u;
    loop {
      if (gi == 0u) { break; }
      let h = psum[gi];
      if (h >= rem) { break; }
      rem = rem - h;
      gi = gi - 1u;
    }
    var b = gi * ${BPT}u + ${BPT - 1}u;
    loop {
      if (b == gi * ${BPT}u) { break; }
      let h = atomicLoad(&lh[b]);
      if (h >= rem) { break; }
      rem = rem - h;
      b = b - 1u;
    }
    sPrefix = sPrefix | (b << shift);
    sRem = rem;
  }
  workgroupBarrier();
}

// Radix select (first nDigits digits) of the rank-th largest of cand[0..n) into sPrefix / sBad.
fn radixCand(li: u32, n: u32, rank: u32, nDigits: u32) {
  if (li == 0u) { sPrefix = 0u; sRem = rank; sBad = 0u; }
  for (var dg = 0u; dg < nDigits; dg = dg + 1u) {
    let shift = digitShift(dg); let hm = digitHigh(dg); let dm = digitMask(dg);
    clearHist(li);
    workgroupBarrier();
    let prefix = sPrefix;
    ${BIN_CACHE_INIT}
    for (var q = li; q < n; q = q + ${WG}u) {
      let key = cand[q];
      if ((key & hm) == prefix) {
        let bin = (key >> shift) & dm;${binCache("lh")}
      }
    }
    ${binCacheFlush("lh")}
    workgroupBarrier();
    selectBin(li, shift, dg == 0u, rank);
  }
}

// The rank-th largest of cand[0..n) by counting, for small n: the key v with
// #(> v) < rank <= #(>= v). Into sPrefix (sBad = 0; needs 1 <= rank <= n).
fn rankCand(li: u32, n: u32, rank: u32) {
  if (li == 0u) { sBad = 0u; }
  for (var q = li; q < n; q = q + ${WG}u) {
    let v = cand[q];
    var gt = 0u; var ge = 0u;
    for (var j = 0u; j < n; j = j + 1u) {
      let c = cand[j];
      gt = gt + select(0u, 1u, c > v);
      ge = ge + select(0u, 1u, c >= v);
    }
    if (gt < rank && rank <= ge) { sPrefix = v; } // every writer writes the same key
  }
  workgroupBarrier();
}

fn loadCount(li: u32) -> u32 {
  if (li == 0u) { sN = atomicLoad(&ncand); }
  return workgroupUniformLoad(&sN);
}

@compute @workgroup_size(${WG}) fn main(${ENTRY}) {
  let row = wgLin(wid, nwg);
  if (row >= U.nRows) { return; }
  let w = U.w; let off = U.valBase + row * w; let k = U.k; let useMask = U.useMask != 0u;
  let mb = U.maskBase; let rank = U.rank;
  // 1. strided sample → threshold t (key); ineligible columns get key 0
  let S = min(w, ${CAND}u);
  let st = max(w / max(S, 1u), 1u);
  for (var q = li; q < S; q = q + ${WG}u) {
    let j = min(samplePos(q, st), w - 1u);
    var key = fkey(vals[off + j]);
    if (useMask && mask[mb + j] == 0u) { key = 0u; }
    cand[q] = key;
  }
  if (li == 0u) { atomicStore(&ncand, 0u); }
  workgroupBarrier();
  var t = 0u;
  if (rank <= S) {
    radixCand(li, S, rank, 2u);
    t = sPrefix;
  }
  workgroupBarrier();
  // 2. eligible keys >= t
  for (var j = li; j < w; j = j + ${WG}u) {
    let key = fkey(vals[off + j]);
    if (key >= t && !(useMask && mask[mb + j] == 0u)) {
      let p = atomicAdd(&ncand, 1u);
      if (p < ${CAND}u) { cand[p] = key; }
    }
  }
  workgroupBarrier();
  let count = loadCount(li);
  // 3. exact k-th largest
  if (k >= 1u && count >= k && count <= ${RANK_MAX}u) {
    rankCand(li, count, k);
  } else if (count >= k && count <= ${CAND}u) {
    radixCand(li, count, k, 3u);
  } else {
    if (li == 0u) { sPrefix = 0u; sRem = k; sBad = 0u; }
    for (var dg = 0u; dg < 3u; dg = dg + 1u) {
      let shift = digitShift(dg); let hm = digitHigh(dg); let dm = digitMask(dg);
      clearHist(li);
      workgroupBarrier();
      let prefix = sPrefix;
      ${BIN_CACHE_INIT}
      for (var j = li; j < w; j = j + ${WG}u) {
        if (useMask && mask[mb + j] == 0u) { continue; }
        let key = fkey(vals[off + j]);
        if ((key & hm) == prefix) {
          let bin = (key >> shift) & dm;${binCache("lh")}
        }
      }
      ${binCacheFlush("lh")}
      workgroupBarrier();
      selectBin(li, shift, dg == 0u, k);
    }
  }
  if (li == 0u) { out[U.outBase + row] = select(keyBits(sPrefix), 0xff800000u, sBad != 0u); }
}`,
  );
}

// ---- gather / transpose ---------------------------------------------------------------------

const KEEP = `
fn keep(a: f32, j: u32, t: f32) -> bool {
  if (!(a > 0.0)) { return false; }
  if (U.useMask != 0u && mask[U.maskBase + j] == 0u) { return false; }
  return select(a >= t, a > t, U.strict != 0u);
}
fn rowThr(row: u32) -> f32 { return thr[U.thrBase + select(0u, row, U.thrRows != 0u)]; }
`;

export const GATHER_COUNT = struct("GatherCountParams", {
  nRows: "u32",
  w: "u32",
  valBase: "u32",
  thrRows: "bool",
  thrBase: "u32",
  useMask: "bool",
  maskBase: "u32",
  strict: "bool",
  rowOff: "u32",
});

/**
 * Count kept entries per row (one workgroup per row).
 */
export function gatherCountKernel(): KernelSource {
  return src(
    GATHER_COUNT,
    [["vals", "f32"], ["thr", "f32"], ["mask", "u32"], ["cnt", "u32"]],
    KEEP + `
var<workgroup> tot: atomic<u32>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let row = wgLin(wid, nwg);
  if (row >= U.nRows) { return; }
  if (li == 0u) { atomicStore(&tot, 0u); }
  workgroupBarrier();
  let w = U.w; let off = U.valBase + row * w; let t = rowThr(row);
  var c = 0u;
  for (var j = li; j < w; j = j + 256u) {
    if (keep(vals[off + j], j, t)) { c = c + 1u; }
  }
  if (c != 0u) { atomicAdd(&tot, c); }
  workgroupBarrier();
  if (li == 0u) { cnt[U.rowOff + row] = atomicLoad(&tot); }
}`,
  );
}

export const GATHER_WRITE = struct("GatherWriteParams", {
  nRows: "u32",
  w: "u32",
  valBase: "u32",
  thrRows: "bool",
  thrBase: "u32",
  useMask: "bool",
  maskBase: "u32",
  strict: "bool",
  rowOff: "u32",
  cap: "u32",
});

/**
 * Write kept entries of each row in ascending column order at offs[row] (capped at cap): every
 * invocation owns a contiguous run of columns; a workgroup scan gives each run's offset.
 */
export function gatherWriteKernel(): KernelSource {
  return src(
    GATHER_WRITE,
    [["vals", "f32"], ["thr", "f32"], ["mask", "u32"], ["offs", "u32"], ["idx", "u32"], ["val", "f32"]],
    KEEP + `
var<workgroup> pre: array<u32, 256>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let row = wgLin(wid, nwg);
  if (row >= U.nRows) { return; }
  let w = U.w; let off = U.valBase + row * w; let t = rowThr(row); let cap = U.cap;
  let L = (w + 255u) / 256u;
  let j0 = min(li * L, w);
  let j1 = min(j0 + L, w);
  var c = 0u;
  for (var j = j0; j < j1; j = j + 1u) {
    if (keep(vals[off + j], j, t)) { c = c + 1u; }
  }
  pre[li] = c;
  workgroupBarrier();
  if (li == 0u) {
    var run = 0u;
    for (var i = 0u; i < 256u; i = i + 1u) { let v = pre[i]; pre[i] = run; run = run + v; }
  }
  workgroupBarrier();
  var p = offs[U.rowOff + row] + pre[li];
  if (c == 0u) { return; }
  for (var j = j0; j < j1; j = j + 1u) {
    let a = vals[off + j];
    if (keep(a, j, t)) {
      if (p < cap) { idx[p] = j; val[p] = a; }
      p = p + 1u;
    }
  }
}`,
  );
}

export const SCAN = struct("ScanParams", {
  n: "u32",
  clampV: "u32",
  cntBase: "u32",
  aBase: "u32",
  bBase: "u32",
});

/**
 * Exclusive scan of cnt[0..n) (single workgroup): outA[i] = Σ_{i'<i} cnt, outA[n] = total,
 * outB = min(outA, clampV).
 */
export function scanKernel(): KernelSource {
  return src(
    SCAN,
    [["cnt", "u32"], ["outA", "u32"], ["outB", "u32"]],
    `
var<workgroup> sums: array<u32, 256>;
var<workgroup> total: u32;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let n = U.n; let cl = U.clampV; let cb = U.cntBase; let ab = U.aBase; let bb = U.bBase;
  let S = (n + 255u) / 256u;
  let s0 = min(li * S, n);
  let s1 = min(s0 + S, n);
  var loc = 0u;
  for (var i = s0; i < s1; i = i + 1u) { loc = loc + cnt[cb + i]; }
  sums[li] = loc;
  workgroupBarrier();
  if (li == 0u) {
    var run = 0u;
    for (var i = 0u; i < 256u; i = i + 1u) { let v = sums[i]; sums[i] = run; run = run + v; }
    total = run;
  }
  workgroupBarrier();
  var run = sums[li];
  for (var i = s0; i < s1; i = i + 1u) {
    let c = cnt[cb + i];
    outA[ab + i] = run;
    outB[bb + i] = min(run, cl);
    run = run + c;
  }
  if (li == 0u) { outA[ab + n] = total; outB[bb + n] = min(total, cl); }
}`,
  );
}

export const TRANSPOSE = struct("TransposeParams", { cap: "u32", rows: "u32", cols: "u32" });

/** cnt[idx[e]] += 1 for valid entries. */
export function transposeCountKernel(): KernelSource {
  return src(
    TRANSPOSE,
    [["rowPtr", "u32"], ["idx", "u32"], ["cnt", "atomic<u32>"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let e = wgLin(wid, nwg) * 256u + li;
  let total = min(rowPtr[U.rows], U.cap);
  if (e >= total) { return; }
  let j = idx[e];
  if (j < U.cols) { atomicAdd(&cnt[j], 1u); }
}`,
  );
}

/** Scatter valid entries to their column: p = fillPos[j]++; row[p] = b; entry[p] = e. */
export function transposeScatterKernel(): KernelSource {
  return src(
    TRANSPOSE,
    [["rowPtr", "u32"], ["idx", "u32"], ["fillPos", "atomic<u32>"], ["rowOut", "u32"], ["entryOut", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let e = wgLin(wid, nwg) * 256u + li;
  let rows = U.rows;
  let total = min(rowPtr[rows], U.cap);
  if (e >= total) { return; }
  let j = idx[e];
  if (j >= U.cols) { return; }
  var lo = 0u; var hi = rows;
  loop {
    if (lo + 1u >= hi) { break; }
    let mid = (lo + hi) >> 1u;
    if (rowPtr[mid] <= e) { lo = mid; } else { hi = mid; }
  }
  let p = atomicAdd(&fillPos[j], 1u);
  rowOut[p] = lo;
  entryOut[p] = e;
}`,
  );
}

// ---- sparse decode / backward ---------------------------------------------------------------

/** Entry range [ea, eb) of CSR row `r` whose latent index lies in [lo, hi) (binary search). */
const ROW_SEG = `
fn lowerBound(e0: u32, e1: u32, v: u32) -> u32 {
  var lo = e0; var hi = e1;
  loop {
    if (lo >= hi) { break; }
    let mid = (lo + hi) >> 1u;
    if (idx[mid] < v) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}
`;

export const DECODE = struct("DecodeParams", {
  nRows: "u32",
  dv: "u32",
  rowOff: "u32",
  lo: "u32",
  hi: "u32",
  wBase: "u32",
  mode: "u32",
  srcBase: "u32",
  outBase: "u32",
  cap: "u32",
});

/**
 * Decode one (row chunk, latent segment): out[b, i] = init + Σ_{e: lo ≤ idx_e < hi} val_e ·
 * W[idx_e − lo, i]. One workgroup per row, invocations over i (vec4 columns when `vec`). Init
 * (mode): 0 zero, 1 src[srcBase + i] (bias), 2 src[srcBase + b·d + i] (a scratch copy of the
 * previous prefix: binding that slab of `out` itself could alias after offset alignment),
 * 3 out itself.
 */
export function decodeKernel(vec: boolean): KernelSource {
  const T = vec ? "vec4<f32>" : "f32";
  return src(
    DECODE,
    [["rowPtr", "u32"], ["idx", "u32"], ["val", "f32"], ["Wm", T], ["srcv", T], ["out", T]],
    ROW_SEG + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= U.nRows) { return; }
  let d = U.dv; let gb = U.rowOff + b; let lo = U.lo; let hi = U.hi; let wb = U.wBase;
  let mode = U.mode; let sb = U.srcBase; let ob = U.outBase + b * d; let cap = U.cap;
  let e0 = min(rowPtr[gb], cap); let e1 = min(rowPtr[gb + 1u], cap);
  let ea = lowerBound(e0, e1, lo);
  let eb = lowerBound(ea, e1, hi);
  for (var i = li; i < d; i = i + 64u) {
    var s = ${T}(0.0);
    if (mode == 1u) { s = srcv[sb + i]; } else if (mode == 2u) { s = srcv[sb + b * d + i]; }
    else if (mode == 3u) { s = out[ob + i]; }
    var c = ${T}(0.0);
    for (var e = ea; e < eb; e = e + 1u) {
      let y = val[e] * Wm[wb + (idx[e] - lo) * d + i] - c;
      let t = s + y;
      c = (t - s) - y;
      s = t;
    }
    out[ob + i] = s;
  }
}`,
  );
}

export const DECODE_BACKWARD = struct("DecodeBackwardParams", {
  nRows: "u32",
  dv: "u32",
  rowOff: "u32",
  lo: "u32",
  hi: "u32",
  wBase: "u32",
  gsBase: "u32",
  cap: "u32",
});

/**
 * gradVal[e] += gS[b] · W[idx_e − lo] for entries of rows in the chunk with lo ≤ idx_e < hi.
 * One workgroup per row, invocations over the row's entries (vec4 loads along d when `vec`).
 */
export function decodeBackwardKernel(vec: boolean): KernelSource {
  const T = vec ? "vec4<f32>" : "f32";
  const body = vec
    ? `
    var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0);
    var i = 0u;
    for (; i + 1u < d; i = i + 2u) {
      s0 += gs[go + i] * Wm[wo + i];
      s1 += gs[go + i + 1u] * Wm[wo + i + 1u];
    }
    if (i < d) { s0 += gs[go + i] * Wm[wo + i]; }
    let t = s0 + s1;
    gv[e] += (t.x + t.y) + (t.z + t.w);`
    : `
    let d4 = d & ~3u;
    var s0 = 0.0; var s1 = 0.0; var s2 = 0.0; var s3 = 0.0;
    var i = 0u;
    for (; i < d4; i = i + 4u) {
      s0 += gs[go + i] * Wm[wo + i];
      s1 += gs[go + i + 1u] * Wm[wo + i + 1u];
      s2 += gs[go + i + 2u] * Wm[wo + i + 2u];
      s3 += gs[go + i + 3u] * Wm[wo + i + 3u];
    }
    for (; i < d; i = i + 1u) { s0 += gs[go + i] * Wm[wo + i]; }
    gv[e] += (s0 + s1) + (s2 + s3);`;
  return src(
    DECODE_BACKWARD,
    [["rowPtr", "u32"], ["idx", "u32"], ["Wm", T], ["gs", T], ["gv", "f32"]],
    ROW_SEG + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= U.nRows) { return; }
  let d = U.dv; let gb = U.rowOff + b; let lo = U.lo; let hi = U.hi; let wb = U.wBase;
  let go = U.gsBase + b * d; let cap = U.cap;
  let e0 = min(rowPtr[gb], cap); let e1 = min(rowPtr[gb + 1u], cap);
  let ea = lowerBound(e0, e1, lo);
  let eb = lowerBound(ea, e1, hi);
  for (var e = ea + li; e < eb; e = e + 64u) {
    let wo = wb + (idx[e] - lo) * d;${body}
  }
}`,
  );
}

export const LATENT_GRADS = struct("LatentGradsParams", {
  nLat: "u32",
  dv: "u32",
  lo: "u32",
  r0: "u32",
  r1: "u32",
  xBase: "u32",
  bdBase: "u32",
  gsBase: "u32",
  weBase: "u32",
  beBase: "u32",
  wdBase: "u32",
  doBenc: "bool",
  hasWd: "bool",
  cpBase: "u32",
});

/**
 * Per-latent gradients for latents [lo, lo + nLat) and sample rows [r0, r1) of x / gS:
 *   gWe[j] += Σ gv[e] (x[b] − bdec), gWd[j] += Σ val[e] gS[b], gbe[j] += Σ gv[e] (if doBenc).
 * One workgroup per latent, invocations over i (vec4 columns when `vec`; d and the bases of the
 * d-strided arrays are then in vec4 units).
 */
export function latentGradsKernel(vec: boolean): KernelSource {
  const T = vec ? "vec4<f32>" : "f32";
  return src(
    LATENT_GRADS,
    [
      ["colPtr", "u32"],
      ["rowT", "u32"],
      ["entryT", "u32"],
      ["gv", "f32"],
      ["val", "f32"],
      ["X", T],
      ["bdec", T],
      ["gs", T],
      ["gWe", T],
      ["gbe", "f32"],
      ["gWd", T],
    ],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let jl = wgLin(wid, nwg);
  if (jl >= U.nLat) { return; }
  let d = U.dv; let r0 = U.r0; let r1 = U.r1;
  let cpb = U.cpBase + jl;
  let s = colPtr[cpb]; let t = colPtr[cpb + 1u];
  if (s >= t) { return; }
  let xb = U.xBase; let bdb = U.bdBase; let gsb = U.gsBase; let hasWd = U.hasWd != 0u;
  let weo = U.weBase + jl * d; let wdo = U.wdBase + jl * d;
  var hit = false;
  for (var p = s; p < t; p = p + 1u) {
    let b = rowT[p];
    if (b >= r0 && b < r1) { hit = true; break; }
  }
  if (hit) {
    for (var i = li; i < d; i = i + 64u) {
      let bd = bdec[bdb + i];
      var aE = ${T}(0.0); var cE = ${T}(0.0); var aD = ${T}(0.0); var cD = ${T}(0.0);
      for (var p = s; p < t; p = p + 1u) {
        let b = rowT[p];
        if (b < r0 || b >= r1) { continue; }
        let e = entryT[p];
        let o = (b - r0) * d + i;
        let yE = gv[e] * (X[xb + o] - bd) - cE;
        let tE = aE + yE;
        cE = (tE - aE) - yE;
        aE = tE;
        if (hasWd) {
          let yD = val[e] * gs[gsb + o] - cD;
          let tD = aD + yD;
          cD = (tD - aD) - yD;
          aD = tD;
        }
      }
      gWe[weo + i] += aE;
      if (hasWd) { gWd[wdo + i] += aD; }
    }
  }
  if (li == 0u && U.doBenc != 0u) {
    var sb = 0.0; var c = 0.0;
    for (var p = s; p < t; p = p + 1u) {
      let y = gv[entryT[p]] - c;
      let tt = sb + y;
      c = (tt - sb) - y;
      sb = tt;
    }
    gbe[U.beBase + jl] += sb;
  }
}`,
  );
}

// ---- reductions -----------------------------------------------------------------------------

export const FOLD = struct("FoldParams", {
  P: "u32",
  d: "u32",
  sgn: "f32",
  partBase: "u32",
  accBase: "u32",
  compBase: "u32",
});

/**
 * Fold partial sums part[p·d + i] (p < P) into the Kahan accumulator (acc[i], comp[i]) with a
 * sign. One workgroup per i.
 */
export function foldKernel(): KernelSource {
  return src(
    FOLD,
    [["part", "f32"], ["acc", "f32"], ["comp", "f32"]],
    treeSum(64) + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg);
  if (i >= U.d) { return; }
  let P = U.P; let d = U.d; let pb = U.partBase;
  var s = 0.0; var c = 0.0;
  for (var p = li; p < P; p = p + 64u) {
    let y = part[pb + p * d + i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  let tot = redSum(li, s - c) * U.sgn;
  if (li == 0u) {
    let ai = U.accBase + i; let ci = U.compBase + i;
    let sum = acc[ai]; let y = tot - comp[ci]; let t = sum + y;
    comp[ci] = (t - sum) - y;
    acc[ai] = t;
  }
}`,
  );
}

export const FINISH = struct("FinishParams", {
  d: "u32",
  scale: "f32",
  accumulate: "bool",
  accBase: "u32",
  compBase: "u32",
  outBase: "u32",
});

/** out[outBase + i] = (accumulate ? out : 0) + (acc[i] − comp[i]) · scale, i < d. */
export function finishKernel(): KernelSource {
  return src(
    FINISH,
    [["acc", "f32"], ["comp", "f32"], ["out", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 64u + li;
  if (i >= U.d) { return; }
  let v = (acc[U.accBase + i] - comp[U.compBase + i]) * U.scale;
  let o = U.outBase + i;
  out[o] = select(0.0, out[o], U.accumulate != 0u) + v;
}`,
  );
}

export const SUM_SQUARES = struct("SumSquaresParams", { n: "u32", base: "u32", epw: "u32", partBase: "u32" });

/** part[g] = Σ a[base + i]², i in workgroup g's range. */
export function sumSquaresKernel(): KernelSource {
  return src(
    SUM_SQUARES,
    [["a", "f32"], ["part", "f32"]],
    treeSum(256) + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let n = U.n; let base = U.base; let epw = U.epw;
  let start = g * epw; let end = min(start + epw, n);
  var s = 0.0; var c = 0.0;
  for (var i = start + li; i < end; i = i + 256u) {
    let v = a[base + i];
    let y = v * v - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  let tot = redSum(li, s - c);
  if (li == 0u) { part[U.partBase + g] = tot; }
}`,
  );
}

export const COL_SUM = struct("ColSumParams", {
  nRows: "u32",
  d: "u32",
  aBase: "u32",
  R: "u32",
  nib: "u32",
  partBase: "u32",
});

/**
 * Column sums over row blocks: part[rb·d + i] = Σ_{rows b of block rb} a[b·d + i].
 * Workgroups: (i block of 64) × (row block).
 */
export function colSumKernel(): KernelSource {
  return src(
    COL_SUM,
    [["a", "f32"], ["part", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let nib = U.nib; let rb = g / nib; let i = (g % nib) * 64u + li;
  let d = U.d;
  if (i >= d) { return; }
  let R = U.R; let b0 = rb * R; let b1 = min(b0 + R, U.nRows); let ab = U.aBase;
  var s = 0.0; var c = 0.0;
  for (var b = b0; b < b1; b = b + 1u) {
    let y = a[ab + b * d + i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  part[U.partBase + rb * d + i] = s;
}`,
  );
}

export const ENTRY_WEIGHT_SUM = struct("EntryWeightSumParams", {
  cap: "u32",
  rows: "u32",
  d: "u32",
  EB: "u32",
  lo: "u32",
  hi: "u32",
  wBase: "u32",
  nib: "u32",
  partBase: "u32",
});

/**
 * Σ_e gv[e] · W[idx_e − lo, i] over entry blocks, for entries with lo ≤ idx_e < hi:
 * part[blk·d + i]. Workgroups: (i block of 64) × (entry block).
 */
export function entryWeightSumKernel(): KernelSource {
  return src(
    ENTRY_WEIGHT_SUM,
    [["rowPtr", "u32"], ["idx", "u32"], ["gv", "f32"], ["Wm", "f32"], ["part", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let nib = U.nib; let blk = g / nib; let i = (g % nib) * 64u + li;
  let d = U.d;
  if (i >= d) { return; }
  let total = min(rowPtr[U.rows], U.cap);
  let EB = U.EB; let e0 = blk * EB; let e1 = min(e0 + EB, total);
  let lo = U.lo; let hi = U.hi; let wb = U.wBase;
  var s = 0.0; var c = 0.0;
  for (var e = e0; e < e1; e = e + 1u) {
    let j = idx[e];
    if (j < lo || j >= hi) { continue; }
    let y = gv[e] * Wm[wb + (j - lo) * d + i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  part[U.partBase + blk * d + i] = s;
}`,
  );
}

// ---- losses ---------------------------------------------------------------------------------

export const RECON = struct("ReconParams", {
  n: "u32",
  xhBase: "u32",
  xBase: "u32",
  gnBase: "u32",
  gsBase: "u32",
  hasNext: "bool",
  coef: "f32",
  wgt: "f32",
  partBase: "u32",
});

/**
 * One prefix g of the reconstruction loss on an element chunk:
 *   gs[i] = (hasNext ? gn[i] : 0) + coef · (xh[i] − x[i]);  part[wg] = Σ wgt · (xh − x)².
 * gn is a scratch copy of prefix g+1's gradient (a second binding of gradS could alias gs).
 */
export function reconKernel(): KernelSource {
  return src(
    RECON,
    [["xh", "f32"], ["X", "f32"], ["gn", "f32"], ["gs", "f32"], ["part", "f32"]],
    treeSum(256) + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let n = U.n; let hasNext = U.hasNext != 0u; let coef = U.coef; let wgt = U.wgt;
  var s = 0.0;
  for (var q = 0u; q < 4u; q = q + 1u) {
    let i = g * 1024u + q * 256u + li;
    if (i < n) {
      let r = xh[U.xhBase + i] - X[U.xBase + i];
      var a = coef * r;
      if (hasNext) { a = gn[U.gnBase + i] + a; }
      gs[U.gsBase + i] = a;
      s += wgt * r * r;
    }
  }
  let tot = redSum(li, s);
  if (li == 0u) { part[U.partBase + g] = tot; }
}`,
  );
}

export const AUX_COLS = struct("AuxColsParams", {
  nRows: "u32",
  d: "u32",
  xBase: "u32",
  xhBase: "u32",
  eaBase: "u32",
  R: "u32",
  nib: "u32",
  mode: "u32",
  meanBase: "u32",
  partABase: "u32",
  partBBase: "u32",
});

/**
 * AuxK column statistics over row blocks of a row chunk, with e = x − xh:
 *   mode 0: partA[rb·d + i] = Σ e,  partB[rb·d + i] = Σ (e − ê)²
 *   mode 1: partA[rb·d + i] = Σ (e − mean_i)²
 */
export function auxColsKernel(): KernelSource {
  return src(
    AUX_COLS,
    [["X", "f32"], ["xh", "f32"], ["ea", "f32"], ["mean", "f32"], ["partA", "f32"], ["partB", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let nib = U.nib; let rb = g / nib; let i = (g % nib) * 64u + li;
  let d = U.d;
  if (i >= d) { return; }
  let R = U.R; let b0 = rb * R; let b1 = min(b0 + R, U.nRows);
  let mode = U.mode;
  var mu = 0.0;
  if (mode == 1u) { mu = mean[U.meanBase + i]; }
  var sA = 0.0; var cA = 0.0; var sB = 0.0; var cB = 0.0;
  for (var b = b0; b < b1; b = b + 1u) {
    let o = b * d + i;
    let e = X[U.xBase + o] - xh[U.xhBase + o];
    var vA = e;
    if (mode == 1u) { let c = e - mu; vA = c * c; }
    else {
      let r = e - ea[U.eaBase + o];
      let yB = r * r - cB; let tB = sB + yB; cB = (tB - sB) - yB; sB = tB;
    }
    let yA = vA - cA; let tA = sA + yA; cA = (tA - sA) - yA; sA = tA;
  }
  partA[U.partABase + rb * d + i] = sA;
  if (mode == 0u) { partB[U.partBBase + rb * d + i] = sB; }
}`,
  );
}

export const AUX_FINAL = struct("AuxFinalParams", {
  alpha: "f32",
  invB: "f32",
  nBase: "u32",
  dBase: "u32",
  outBase: "u32",
  scBase: "u32",
  nCompBase: "u32",
  dCompBase: "u32",
  minus2overB: "f32",
});

/**
 * AuxK scalars: num = accN/B, den = accD/B; loss = alpha·num/den (0 if not finite) → out;
 * sc = alpha·(−2/B)/den (0 if not finite).
 */
export function auxFinalKernel(): KernelSource {
  return src(
    AUX_FINAL,
    [["accN", "f32"], ["accD", "f32"], ["out", "f32"], ["sc", "f32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  let alpha = U.alpha; let invB = U.invB;
  let num = (accN[U.nBase] - accN[U.nCompBase]) * invB;
  let den = (accD[U.dBase] - accD[U.dCompBase]) * invB;
  var loss = 0.0; var s = 0.0;
  if (den > 0.0 && isFinite(num) && isFinite(den)) {
    let l = alpha * num / den;
    let ss = alpha * U.minus2overB / den;
    if (isFinite(l) && isFinite(ss)) { loss = l; s = ss; }
  }
  out[U.outBase] = loss;
  sc[U.scBase] = s;
}`,
  );
}

export const AUX_GRAD = struct("AuxGradParams", {
  n: "u32",
  xBase: "u32",
  xhBase: "u32",
  eaBase: "u32",
  gsBase: "u32",
  scBase: "u32",
});

/** gs[i] = sc · ((x − xh) − ea) on an element chunk. */
export function auxGradKernel(): KernelSource {
  return src(
    AUX_GRAD,
    [["X", "f32"], ["xh", "f32"], ["ea", "f32"], ["gs", "f32"], ["sc", "f32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i >= U.n) { return; }
  let s = sc[U.scBase];
  let e = X[U.xBase + i] - xh[U.xhBase + i];
  gs[U.gsBase + i] = s * (e - ea[U.eaBase + i]);
}`,
  );
}

export const L1 = struct("L1Params", { cap: "u32", rows: "u32", lam: "f32", partBase: "u32" });

/** gradVal[e] += lambda and part[wg] = Σ val[e] over valid entries. */
export function l1Kernel(): KernelSource {
  return src(
    L1,
    [["rowPtr", "u32"], ["val", "f32"], ["gv", "f32"], ["part", "f32"]],
    treeSum(256) + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  let e = g * 256u + li;
  let total = min(rowPtr[U.rows], U.cap);
  var s = 0.0;
  if (e < total) {
    gv[e] += U.lam;
    s = val[e];
  }
  let tot = redSum(li, s);
  if (li == 0u) { part[U.partBase + g] = tot; }
}`,
  );
}

// ---- optimiser ------------------------------------------------------------------------------

export const ROW_OP = struct("RowOpParams", {
  nRows: "u32",
  d: "u32",
  wBase: "u32",
  gBase: "u32",
  mode: "u32",
});

/**
 * Row-wise ops on [rows, d], one invocation per row (no workgroup barriers: they are costly on
 * software rasterisers):
 *   mode 0 (projectDecoderGrad): G[r] −= (W[r]·G[r] / |W[r]|²) W[r]   (skip |W[r]| = 0)
 *   mode 1 (renormRows):         W[r] /= |W[r]|                       (skip |W[r]| = 0)
 */
export function rowOpKernel(): KernelSource {
  return src(
    ROW_OP,
    [["Wm", "f32"], ["Gm", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let r = wgLin(wid, nwg) * 64u + li;
  if (r >= U.nRows) { return; }
  let d = U.d; let wo = U.wBase + r * d; let go = U.gBase + r * d; let mode = U.mode;
  var n0 = 0.0; var n1 = 0.0; var p0 = 0.0; var p1 = 0.0;
  var i = 0u;
  for (; i + 1u < d; i = i + 2u) {
    let w0 = Wm[wo + i]; let w1 = Wm[wo + i + 1u];
    n0 += w0 * w0; n1 += w1 * w1;
    if (mode == 0u) { p0 += w0 * Gm[go + i]; p1 += w1 * Gm[go + i + 1u]; }
  }
  if (i < d) {
    let w0 = Wm[wo + i];
    n0 += w0 * w0;
    if (mode == 0u) { p0 += w0 * Gm[go + i]; }
  }
  let tn = n0 + n1;
  if (tn == 0.0) { return; }
  if (mode == 0u) {
    let c = (p0 + p1) / tn;
    for (var j = 0u; j < d; j = j + 1u) { Gm[go + j] = Gm[go + j] - c * Wm[wo + j]; }
  } else {
    let s = 1.0 / sqrt(tn);
    for (var j = 0u; j < d; j = j + 1u) { Wm[wo + j] = Wm[wo + j] * s; }
  }
}`,
  );
}

export const ADAM = struct("AdamParams", {
  n: "u32",
  pBase: "u32",
  gBase: "u32",
  mBase: "u32",
  vBase: "u32",
  b1: "f32",
  b2: "f32",
  omb1: "f32",
  omb2: "f32",
  stepSize: "f32",
  sqrtBc2: "f32",
  eps: "f32",
  clip: "bool",
  maxNorm: "f32",
  nsBase: "u32",
});

/**
 * torch.optim.Adam step on an element chunk, with clip scale min(1, maxNorm/(sqrt(ns)+1e-6)).
 */
export function adamKernel(): KernelSource {
  return src(
    ADAM,
    [["P", "f32"], ["Gr", "f32"], ["M", "f32"], ["V", "f32"], ["ns", "f32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i >= U.n) { return; }
  var scale = 1.0;
  if (U.clip != 0u) { scale = min(1.0, U.maxNorm / (sqrt(ns[U.nsBase]) + 1e-6)); }
  let g = Gr[U.gBase + i] * scale;
  let mi = U.mBase + i; let vi = U.vBase + i; let pi = U.pBase + i;
  let m = U.b1 * M[mi] + U.omb1 * g;
  let v = U.b2 * V[vi] + U.omb2 * g * g;
  M[mi] = m;
  V[vi] = v;
  P[pi] = P[pi] - U.stepSize * m / (sqrt(v) / U.sqrtBc2 + U.eps);
}`,
  );
}

// ---- training state -------------------------------------------------------------------------

export const MIN_POSITIVE = struct("MinPositiveParams", { cap: "u32", rows: "u32" });

/** mn[0] = min(mn[0], bits of the smallest positive val among valid entries). */
export function minPositiveKernel(): KernelSource {
  return src(
    MIN_POSITIVE,
    [["rowPtr", "u32"], ["val", "f32"], ["mn", "atomic<u32>"]],
    `
var<workgroup> lm: atomic<u32>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  if (li == 0u) { atomicStore(&lm, 0x7f800000u); }
  workgroupBarrier();
  let e = g * 256u + li;
  let total = min(rowPtr[U.rows], U.cap);
  if (e < total) {
    let v = val[e];
    if (v > 0.0) { atomicMin(&lm, bitcast<u32>(v)); }
  }
  workgroupBarrier();
  if (li == 0u) {
    let m = atomicLoad(&lm);
    if (m < 0x7f800000u) { atomicMin(&mn[0], m); }
  }
}`,
  );
}

export const EMA = struct("EmaParams", { beta: "f32", thrBase: "u32", omBeta: "f32" });

/** thr = thr < 0 ? m : beta·thr + (1 − beta)·m with m from mn (0 if none). */
export function emaKernel(): KernelSource {
  return src(
    EMA,
    [["mn", "u32"], ["thr", "f32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  let mb = mn[0];
  let m = select(bitcast<f32>(mb), 0.0, mb >= 0x7f800000u);
  let ti = U.thrBase;
  let t = thr[ti];
  thr[ti] = select(U.beta * t + U.omBeta * m, m, t < 0.0);
}`,
  );
}

export const DEAD = struct("DeadParams", {
  n: "u32",
  cpBase: "u32",
  cBase: "u32",
  mBase: "u32",
  rows: "f32",
  deadAfter: "f32",
});

/**
 * Dead-latent bookkeeping on a latent chunk.
 */
export function deadKernel(): KernelSource {
  return src(
    DEAD,
    [["colPtr", "u32"], ["counter", "f32"], ["mask", "u32"], ["cnt", "atomic<u32>"]],
    `
var<workgroup> ld: atomic<u32>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= U.groups) { return; }
  if (li == 0u) { atomicStore(&ld, 0u); }
  workgroupBarrier();
  let j = g * 256u + li;
  if (j < U.n) {
    let cp = U.cpBase + j;
    let ci = U.cBase + j;
    var c = counter[ci] + U.rows;
    if (colPtr[cp + 1u] > colPtr[cp]) { c = 0.0; }
    counter[ci] = c;
    let dead = c >= U.deadAfter;
    mask[U.mBase + j] = select(0u, 1u, dead);
    if (dead) { atomicAdd(&ld, 1u); }
  }
  workgroupBarrier();
  if (li == 0u) {
    let n = atomicLoad(&ld);
    if (n != 0u) { atomicAdd(&cnt[0], n); }
  }
}`,
  );
}

export const COUNT_TO_FLOAT = struct("CountToFloatParams", { outBase: "u32" });

/** out[outBase] = f32(cnt[0]). */
export function countToFloatKernel(): KernelSource {
  return src(
    COUNT_TO_FLOAT,
    [["cnt", "u32"], ["out", "f32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  out[U.outBase] = f32(cnt[0]);
}`,
  );
}

// ---- general primitives: dense and sparse matmuls, entry gather/scatter -------------------

export const MATMUL = struct("MatmulParams", {
  M: "u32",
  N: "u32",
  K: "u32",
  aBase: "u32",
  aSm: "u32",
  aSk: "u32",
  bBase: "u32",
  bSk: "u32",
  bSn: "u32",
  cBase: "u32",
  cSm: "u32",
  acc: "bool",
  alpha: "f32",
});

/**
 * c[m, n] (+)= alpha · Σ_k A(m, k) B(k, n) on an (M × N × K) block, with strided operands:
 * A(m, k) = A[aBase + m·aSm + k·aSk], B(k, n) = B[bBase + k·bSk + n·bSn], C(m, n) =
 * C[cBase + m·cSm + n] (the host picks the strides of each transpose and the block origins).
 * 4 × 4 outputs per invocation, 8 × 8 invocations per workgroup, no workgroup memory (register
 * blocking is what pays on software adapters).
 */
export function matmulKernel(): KernelSource {
  return src(
    MATMUL,
    [["A", "f32"], ["Bm", "f32"], ["C", "f32"]],
    `
@compute @workgroup_size(8, 8) fn main(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>) {
  let m0 = wid.y * 32u + lid.y; let n0 = wid.x * 32u + lid.x;
  var s: array<array<f32, 4>, 4>;
  var ao: array<u32, 4>; var bo: array<u32, 4>;
  for (var r = 0u; r < 4u; r = r + 1u) {
    ao[r] = U.aBase + min(m0 + r * 8u, U.M - 1u) * U.aSm;
    bo[r] = U.bBase + min(n0 + r * 8u, U.N - 1u) * U.bSn;
  }
  for (var k = 0u; k < U.K; k = k + 1u) {
    var av: array<f32, 4>; var bv: array<f32, 4>;
    for (var r = 0u; r < 4u; r = r + 1u) {
      av[r] = A[ao[r] + k * U.aSk];
      bv[r] = Bm[bo[r] + k * U.bSk];
    }
    for (var r = 0u; r < 4u; r = r + 1u) {
      for (var c = 0u; c < 4u; c = c + 1u) { s[r][c] = s[r][c] + av[r] * bv[c]; }
    }
  }
  for (var r = 0u; r < 4u; r = r + 1u) {
    let m = m0 + r * 8u;
    if (m >= U.M) { continue; }
    for (var c = 0u; c < 4u; c = c + 1u) {
      let n = n0 + c * 8u;
      if (n >= U.N) { continue; }
      let o = U.cBase + m * U.cSm + n;
      let v = U.alpha * s[r][c];
      if (U.acc != 0u) { C[o] = C[o] + v; } else { C[o] = v; }
    }
  }
}`,
  );
}

export const SPMM = struct("SpmmParams", {
  nRows: "u32",
  d: "u32",
  rowOff: "u32",
  lo: "u32",
  hi: "u32",
  wBase: "u32",
  outBase: "u32",
  cap: "u32",
  init: "bool",
});

/**
 * out[b, i] = (init ? out[b, i] : 0) + Σ_{e ∈ row b, lo ≤ idx_e < hi} vals[e] · W[idx_e − lo, i]
 * for the rows of a chunk and one latent segment. One workgroup per row, invocations over i.
 */
export function spmmKernel(): KernelSource {
  return src(
    SPMM,
    [["rowPtr", "u32"], ["idx", "u32"], ["vals", "f32"], ["Wm", "f32"], ["out", "f32"]],
    ROW_SEG + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= U.nRows) { return; }
  let d = U.d; let gb = U.rowOff + b; let ob = U.outBase + b * d;
  let e0 = min(rowPtr[gb], U.cap); let e1 = min(rowPtr[gb + 1u], U.cap);
  let ea = lowerBound(e0, e1, U.lo);
  let eb = lowerBound(ea, e1, U.hi);
  for (var i = li; i < d; i = i + 64u) {
    var s = 0.0;
    if (U.init != 0u) { s = out[ob + i]; }
    var c = 0.0;
    for (var e = ea; e < eb; e = e + 1u) {
      let y = vals[e] * Wm[U.wBase + (idx[e] - U.lo) * d + i] - c;
      let t = s + y;
      c = (t - s) - y;
      s = t;
    }
    out[ob + i] = s;
  }
}`,
  );
}

export const SDDMM = struct("SddmmParams", {
  nRows: "u32",
  d: "u32",
  rowOff: "u32",
  lo: "u32",
  hi: "u32",
  aBase: "u32",
  wBase: "u32",
  cap: "u32",
});

/** out[e] += A[b] · W[idx_e − lo] for entries of the chunk's rows with lo ≤ idx_e < hi. */
export function sddmmKernel(): KernelSource {
  return src(
    SDDMM,
    [["rowPtr", "u32"], ["idx", "u32"], ["A", "f32"], ["Wm", "f32"], ["out", "f32"]],
    ROW_SEG + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= U.nRows) { return; }
  let d = U.d; let gb = U.rowOff + b; let ao = U.aBase + b * d;
  let e0 = min(rowPtr[gb], U.cap); let e1 = min(rowPtr[gb + 1u], U.cap);
  let ea = lowerBound(e0, e1, U.lo);
  let eb = lowerBound(ea, e1, U.hi);
  for (var e = ea + li; e < eb; e = e + 64u) {
    let wo = U.wBase + (idx[e] - U.lo) * d;
    var s0 = 0.0; var s1 = 0.0;
    var i = 0u;
    for (; i + 1u < d; i = i + 2u) {
      s0 += A[ao + i] * Wm[wo + i];
      s1 += A[ao + i + 1u] * Wm[wo + i + 1u];
    }
    if (i < d) { s0 += A[ao + i] * Wm[wo + i]; }
    out[e] += s0 + s1;
  }
}`,
  );
}

export const SPMMT = struct("SpmmTParams", {
  nLat: "u32",
  d: "u32",
  r0: "u32",
  r1: "u32",
  aBase: "u32",
  outBase: "u32",
  cpBase: "u32",
  init: "bool",
});

/**
 * out[j, i] = (init ? out[j, i] : 0) + Σ_{p ∈ column j, r0 ≤ row_p < r1} vals[entry_p] ·
 * A[row_p − r0, i] for the latents of a segment. One workgroup per latent, invocations over i.
 */
export function spmmTKernel(): KernelSource {
  return src(
    SPMMT,
    [["colPtr", "u32"], ["rowT", "u32"], ["entryT", "u32"], ["vals", "f32"], ["A", "f32"], ["out", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let jl = wgLin(wid, nwg);
  if (jl >= U.nLat) { return; }
  let d = U.d; let oo = U.outBase + jl * d;
  let s0 = colPtr[U.cpBase + jl]; let s1 = colPtr[U.cpBase + jl + 1u];
  for (var i = li; i < d; i = i + 64u) {
    var s = 0.0;
    if (U.init != 0u) { s = out[oo + i]; }
    var c = 0.0;
    for (var p = s0; p < s1; p = p + 1u) {
      let b = rowT[p];
      if (b < U.r0 || b >= U.r1) { continue; }
      let y = vals[entryT[p]] * A[U.aBase + (b - U.r0) * d + i] - c;
      let t = s + y;
      c = (t - s) - y;
      s = t;
    }
    out[oo + i] = s;
  }
}`,
  );
}

export const ENTRIES = struct("EntriesParams", {
  nRows: "u32",
  cols: "u32",
  rowOff: "u32",
  denseBase: "u32",
  cap: "u32",
  scatter: "bool",
});

/**
 * Gather (scatter = false): vals[e] = dense[b, idx_e]; scatter: dense[b, idx_e] += vals[e], for
 * the entries of the chunk's rows. One workgroup per row, invocations over its entries (distinct
 * columns, so the scatter needs no atomics).
 */
export function entriesKernel(): KernelSource {
  return src(
    ENTRIES,
    [["rowPtr", "u32"], ["idx", "u32"], ["vals", "f32"], ["dense", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= U.nRows) { return; }
  let gb = U.rowOff + b; let db = U.denseBase + b * U.cols;
  let e1 = min(rowPtr[gb + 1u], U.cap);
  for (var e = min(rowPtr[gb], U.cap) + li; e < e1; e = e + 64u) {
    let o = db + idx[e];
    if (U.scatter != 0u) { dense[o] = dense[o] + vals[e]; } else { vals[e] = dense[o]; }
  }
}`,
  );
}
