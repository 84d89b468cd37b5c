/**
 * WGSL sources of the WebGPU backend. Every kernel has the uniform parameter block at binding 0
 * (64 u32 words, read with `pu(i)` / `pf(i)`; word 63 = number of workgroups of the dispatch) and
 * `nStorage` read-write storage buffers at bindings 1..n. Storage bindings are ranges of tensors
 * (see engine.ts), so every index is offset by a `...Base` parameter. All storage bindings are
 * read_write so that the same buffer may be bound more than once in a dispatch.
 *
 * Where the CPU oracle accumulates in float64, kernels use compensated (Kahan) f32 summation.
 */

export interface KernelSource {
  code: string;
  nStorage: number;
}

const PRELUDE = /* wgsl */ `
@group(0) @binding(0) var<uniform> U: array<vec4<u32>, 16>;
fn pu(i: u32) -> u32 { return U[i >> 2u][i & 3u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
fn wgLin(w: vec3<u32>, n: vec3<u32>) -> u32 { return w.x + w.y * n.x; }
fn nGroups() -> u32 { return pu(63u); }
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

function src(bufs: [string, string][], body: string): KernelSource {
  return { code: PRELUDE + decl(bufs) + "\n" + body, nStorage: bufs.length };
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

/** a[base + i] = value bits, i < n. */
export function fillKernel(): KernelSource {
  return src(
    [["a", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i < pu(0u)) { a[pu(1u) + i] = pu(2u); }
}`,
  );
}

// ---- encoder matmul -------------------------------------------------------------------------

/**
 * pre[b, j] = relu(Σ_k (x[b,k] − bdec[k]) · W[j,k] + benc[j]): register-blocked, no workgroup
 * memory. Each invocation computes 8 rows × 16 latents (rows rb + 8r, latents cb + 8c);
 * workgroups are 8×8 invocations = 64 rows × 128 latents. `vec` = 4 loads vec4 (needs d % 4 == 0).
 * Params: 0 B, 1 w, 2 d/V, 3 xBase/V, 4 wBase/V, 5 bencBase, 6 bdecBase/V, 7 preBase, 8 preStride.
 */
export function encodeKernel(vec: boolean): KernelSource {
  const R = 8, C = 16;
  const T = vec ? "vec4<f32>" : "f32";
  const mul = (a: string, b: string) => vec ? `dot(${a}, ${b})` : `${a} * ${b}`;
  let s = "";
  for (let r = 0; r < R; r++) s += `  let xo${r} = pu(3u) + min(rb + ${r * 8}u, B - 1u) * dv;\n`;
  for (let c = 0; c < C; c++) s += `  let wo${c} = pu(4u) + min(cb + ${c * 8}u, W - 1u) * dv;\n`;
  for (let r = 0; r < R; r++) {
    s += "  var " + Array.from({ length: C }, (_, c) => `a${r}_${c} = 0.0`).join("; var ") + ";\n";
  }
  s += `  let bdb = pu(6u);\n  for (var k = 0u; k < dv; k = k + 1u) {\n    let bd = bdec[bdb + k];\n`;
  for (let r = 0; r < R; r++) s += `    let x${r} = X[xo${r} + k] - bd;\n`;
  for (let c = 0; c < C; c++) {
    s += `    { let w = Wm[wo${c} + k];`;
    for (let r = 0; r < R; r++) s += ` a${r}_${c} += ${mul(`x${r}`, "w")};`;
    s += " }\n";
  }
  s += "  }\n  let pb = pu(7u); let ps = pu(8u); let bb = pu(5u);\n";
  for (let c = 0; c < C; c++) {
    s += `  if (cb + ${c * 8}u < W) {\n    let j = cb + ${c * 8}u; let be = benc[bb + j];\n`;
    for (let r = 0; r < R; r++) {
      s += `    if (rb + ${r * 8}u < B) { let v = a${r}_${c} + be; ` +
        `pre[pb + (rb + ${r * 8}u) * ps + j] = select(0.0, v, v > 0.0); }\n`;
    }
    s += "  }\n";
  }
  return src(
    [["X", T], ["Wm", T], ["benc", "f32"], ["bdec", T], ["pre", "f32"]],
    `
@compute @workgroup_size(8, 8) fn main(@builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>) {
  let B = pu(0u); let W = pu(1u); let dv = pu(2u);
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

/** Reset the select state: histogram 0, prefix 0, remaining k. Params: 0 k. */
export function kthInitKernel(): KernelSource {
  return src(
    [["hs", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  for (var i = li; i < ${KTH.BINS}u; i = i + 256u) { hs[i] = 0u; }
  if (li == 0u) {
    hs[${KTH.PREFIX}u] = 0u; hs[${KTH.REM}u] = pu(0u); hs[${KTH.NCAND}u] = 0u; hs[${KTH.OK}u] = 0u;
  }
}`,
  );
}

/** sample[j] = vals[base + min(samplePos(j, stride), chunkEnd − 1) − chunkStart] for j in
 * [j0, j0 + m). Params: 0 m, 1 j0, 2 stride, 3 base − chunkStart (wrapping), 4 sampleBase,
 * 5 chunkEnd. */
export function kthSampleKernel(): KernelSource {
  return src(
    [["vals", "u32"], ["sample", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let q = wgLin(wid, nwg) * 256u + li;
  if (q >= pu(0u)) { return; }
  let j = pu(1u) + q;
  sample[pu(4u) + j] = vals[min(samplePos(j, pu(2u)), pu(5u) - 1u) + pu(3u)];
}`,
  );
}

/**
 * Append the keys of vals[base + i] (i < n) at or above the sampled threshold to the candidate
 * buffer (counting all of them, even past the capacity). Params: 0 n, 1 base, 2 capacity,
 * 3 elements per workgroup.
 */
export function kthCompactKernel(): KernelSource {
  return src(
    [["vals", "u32"], ["hs", "atomic<u32>"], ["cand", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let t = fkey(atomicLoad(&hs[${KTH.TBITS}u]));
  let epw = pu(3u); let base = pu(1u); let cap = pu(2u);
  let start = g * epw; let end = min(start + epw, pu(0u));
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

/** hs[OK] = (k <= ncand <= capacity). Params: 0 capacity. */
export function kthDecideKernel(): KernelSource {
  return src(
    [["hs", "u32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  let nc = hs[${KTH.NCAND}u];
  hs[${KTH.OK}u] = select(0u, 1u, nc >= hs[${KTH.REM}u] && nc <= pu(0u));
}`,
  );
}

/**
 * Histogram of one digit of the keys whose higher digits equal the prefix found so far:
 * per-workgroup shared histogram, then atomics into the global one. Source (param 6): 1 = the
 * data vals[base + i], i < n, when the candidate path failed; 2 = the candidates cand[i],
 * i < ncand, when it succeeded. Params: 0 n, 1 base, 2 shift, 3 highMask, 4 elements per
 * workgroup, 5 digit mask, 6 source.
 */
export function kthHistKernel(): KernelSource {
  const bins = KTH.BINS;
  return src(
    [["vals", "u32"], ["hs", "atomic<u32>"], ["cand", "u32"]],
    `
var<workgroup> lh: array<atomic<u32>, ${bins}>;
var<workgroup> sN: u32;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let srcKind = pu(6u);
  if (li == 0u) {
    let ok = atomicLoad(&hs[${KTH.OK}u]) != 0u;
    var nn = pu(0u);
    if (srcKind == 2u) { nn = atomicLoad(&hs[${KTH.NCAND}u]); }
    if ((srcKind == 1u && ok) || (srcKind == 2u && !ok)) { nn = 0u; }
    sN = nn;
  }
  let n = workgroupUniformLoad(&sN); // uniform: the early exit below precedes barriers
  let epw = pu(4u);
  let start = g * epw;
  if (start >= n) { return; }
  for (var i = li; i < ${bins}u; i = i + 256u) { atomicStore(&lh[i], 0u); }
  workgroupBarrier();
  let base = pu(1u); let shift = pu(2u); let hm = pu(3u); let dm = pu(5u);
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

/**
 * Pick the digit: walk bins from the top, subtracting counts until the bin holding the
 * remaining-th largest; update prefix/remaining; clear the histogram. On the last digit write
 * the selected float to out[outBase] (as bits). Params: 0 shift, 1 last, 2 outBase.
 */
export function kthSelectKernel(): KernelSource {
  return src(
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
  let prefix = hs[${KTH.PREFIX}u] | (b << pu(0u));
  hs[${KTH.PREFIX}u] = prefix;
  hs[${KTH.REM}u] = rem;
  for (var i = 0u; i < ${KTH.BINS}u; i = i + 1u) { hs[i] = 0u; }
  if (pu(1u) == 1u) { out[pu(2u)] = keyBits(prefix); }
}`,
  );
}

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
 * Params: 0 nRows, 1 w, 2 valBase, 3 k, 4 useMask, 5 maskBase, 6 outBase, 7 rank.
 */
export function kthRowsKernel(): KernelSource {
  const CAND = 1024, WG = 64, BPT = 2048 / WG, RANK_MAX = 512;
  return src(
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
  if (row >= pu(0u)) { return; }
  let w = pu(1u); let off = pu(2u) + row * w; let k = pu(3u); let useMask = pu(4u) != 0u;
  let mb = pu(5u); let rank = pu(7u);
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
  if (li == 0u) { out[pu(6u) + row] = select(keyBits(sPrefix), 0xff800000u, sBad != 0u); }
}`,
  );
}

// ---- gather / transpose ---------------------------------------------------------------------

const KEEP = `
fn keep(a: f32, j: u32, t: f32) -> bool {
  if (!(a > 0.0)) { return false; }
  if (pu(5u) != 0u && mask[pu(6u) + j] == 0u) { return false; }
  return select(a >= t, a > t, pu(7u) != 0u);
}
fn rowThr(row: u32) -> f32 { return thr[pu(4u) + select(0u, row, pu(3u) != 0u)]; }
`;

/**
 * Count kept entries per row (one workgroup per row). Params: 0 nRows, 1 w, 2 valBase,
 * 3 thrRows, 4 thrBase, 5 useMask, 6 maskBase, 7 strict, 8 rowOff.
 */
export function gatherCountKernel(): KernelSource {
  return src(
    [["vals", "f32"], ["thr", "f32"], ["mask", "u32"], ["cnt", "u32"]],
    KEEP + `
var<workgroup> tot: atomic<u32>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let row = wgLin(wid, nwg);
  if (row >= pu(0u)) { return; }
  if (li == 0u) { atomicStore(&tot, 0u); }
  workgroupBarrier();
  let w = pu(1u); let off = pu(2u) + row * w; let t = rowThr(row);
  var c = 0u;
  for (var j = li; j < w; j = j + 256u) {
    if (keep(vals[off + j], j, t)) { c = c + 1u; }
  }
  if (c != 0u) { atomicAdd(&tot, c); }
  workgroupBarrier();
  if (li == 0u) { cnt[pu(8u) + row] = atomicLoad(&tot); }
}`,
  );
}

/**
 * Write kept entries of each row in ascending column order at offs[row] (capped at cap): every
 * invocation owns a contiguous run of columns; a workgroup scan gives each run's offset.
 * Params as gatherCount plus 9 cap.
 */
export function gatherWriteKernel(): KernelSource {
  return src(
    [["vals", "f32"], ["thr", "f32"], ["mask", "u32"], ["offs", "u32"], ["idx", "u32"], ["val", "f32"]],
    KEEP + `
var<workgroup> pre: array<u32, 256>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let row = wgLin(wid, nwg);
  if (row >= pu(0u)) { return; }
  let w = pu(1u); let off = pu(2u) + row * w; let t = rowThr(row); let cap = pu(9u);
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
  var p = offs[pu(8u) + row] + pre[li];
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

/**
 * Exclusive scan of cnt[0..n) (single workgroup): outA[i] = Σ_{i'<i} cnt, outA[n] = total,
 * outB = min(outA, clampV). Params: 0 n, 1 clampV, 2 cntBase, 3 aBase, 4 bBase.
 */
export function scanKernel(): KernelSource {
  return src(
    [["cnt", "u32"], ["outA", "u32"], ["outB", "u32"]],
    `
var<workgroup> sums: array<u32, 256>;
var<workgroup> total: u32;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let n = pu(0u); let cl = pu(1u); let cb = pu(2u); let ab = pu(3u); let bb = pu(4u);
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

/** cnt[idx[e]] += 1 for valid entries. Params: 0 cap, 1 rows, 2 cols. */
export function transposeCountKernel(): KernelSource {
  return src(
    [["rowPtr", "u32"], ["idx", "u32"], ["cnt", "atomic<u32>"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let e = wgLin(wid, nwg) * 256u + li;
  let total = min(rowPtr[pu(1u)], pu(0u));
  if (e >= total) { return; }
  let j = idx[e];
  if (j < pu(2u)) { atomicAdd(&cnt[j], 1u); }
}`,
  );
}

/** Scatter valid entries to their column: p = fillPos[j]++; row[p] = b; entry[p] = e. */
export function transposeScatterKernel(): KernelSource {
  return src(
    [["rowPtr", "u32"], ["idx", "u32"], ["fillPos", "atomic<u32>"], ["rowOut", "u32"], ["entryOut", "u32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let e = wgLin(wid, nwg) * 256u + li;
  let rows = pu(1u);
  let total = min(rowPtr[rows], pu(0u));
  if (e >= total) { return; }
  let j = idx[e];
  if (j >= pu(2u)) { return; }
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

/**
 * Decode one (row chunk, latent segment): out[b, i] = init + Σ_{e: lo ≤ idx_e < hi} val_e ·
 * W[idx_e − lo, i]. One workgroup per row, invocations over i (vec4 columns when `vec`). Init
 * (mode): 0 zero, 1 src[srcBase + i] (bias), 2 src[srcBase + b·d + i] (a scratch copy of the
 * previous prefix: binding that slab of `out` itself could alias after offset alignment),
 * 3 out itself. Params: 0 nRows, 1 d/V, 2 rowOff, 3 lo, 4 hi, 5 wBase/V, 6 mode, 7 srcBase/V,
 * 8 outBase/V, 9 cap.
 */
export function decodeKernel(vec: boolean): KernelSource {
  const T = vec ? "vec4<f32>" : "f32";
  return src(
    [["rowPtr", "u32"], ["idx", "u32"], ["val", "f32"], ["Wm", T], ["srcv", T], ["out", T]],
    ROW_SEG + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= pu(0u)) { return; }
  let d = pu(1u); let gb = pu(2u) + b; let lo = pu(3u); let hi = pu(4u); let wb = pu(5u);
  let mode = pu(6u); let sb = pu(7u); let ob = pu(8u) + b * d; let cap = pu(9u);
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

/**
 * gradVal[e] += gS[b] · W[idx_e − lo] for entries of rows in the chunk with lo ≤ idx_e < hi.
 * One workgroup per row, invocations over the row's entries (vec4 loads along d when `vec`).
 * Params: 0 nRows, 1 d/V, 2 rowOff, 3 lo, 4 hi, 5 wBase/V, 6 gsBase/V, 7 cap.
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
    [["rowPtr", "u32"], ["idx", "u32"], ["Wm", T], ["gs", T], ["gv", "f32"]],
    ROW_SEG + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let b = wgLin(wid, nwg);
  if (b >= pu(0u)) { return; }
  let d = pu(1u); let gb = pu(2u) + b; let lo = pu(3u); let hi = pu(4u); let wb = pu(5u);
  let go = pu(6u) + b * d; let cap = pu(7u);
  let e0 = min(rowPtr[gb], cap); let e1 = min(rowPtr[gb + 1u], cap);
  let ea = lowerBound(e0, e1, lo);
  let eb = lowerBound(ea, e1, hi);
  for (var e = ea + li; e < eb; e = e + 64u) {
    let wo = wb + (idx[e] - lo) * d;${body}
  }
}`,
  );
}

/**
 * Per-latent gradients for latents [lo, lo + nLat) and sample rows [r0, r1) of x / gS:
 *   gWe[j] += Σ gv[e] (x[b] − bdec), gWd[j] += Σ val[e] gS[b], gbe[j] += Σ gv[e] (if doBenc).
 * One workgroup per latent, invocations over i (vec4 columns when `vec`; d and the bases of the
 * d-strided arrays are then in vec4 units). Params: 0 nLat, 1 d, 2 lo, 3 r0, 4 r1, 5 xBase,
 * 6 bdBase, 7 gsBase, 8 weBase, 9 beBase, 10 wdBase, 11 doBenc, 12 hasWd, 13 cpBase.
 */
export function latentGradsKernel(vec: boolean): KernelSource {
  const T = vec ? "vec4<f32>" : "f32";
  return src(
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
  if (jl >= pu(0u)) { return; }
  let d = pu(1u); let r0 = pu(3u); let r1 = pu(4u);
  let cpb = pu(13u) + jl;
  let s = colPtr[cpb]; let t = colPtr[cpb + 1u];
  if (s >= t) { return; }
  let xb = pu(5u); let bdb = pu(6u); let gsb = pu(7u); let hasWd = pu(12u) != 0u;
  let weo = pu(8u) + jl * d; let wdo = pu(10u) + jl * d;
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
  if (li == 0u && pu(11u) != 0u) {
    var sb = 0.0; var c = 0.0;
    for (var p = s; p < t; p = p + 1u) {
      let y = gv[entryT[p]] - c;
      let tt = sb + y;
      c = (tt - sb) - y;
      sb = tt;
    }
    gbe[pu(9u) + jl] += sb;
  }
}`,
  );
}

// ---- reductions -----------------------------------------------------------------------------

/**
 * Fold partial sums part[p·d + i] (p < P) into the Kahan accumulator (acc[i], comp[i]) with a
 * sign. One workgroup per i. Params: 0 P, 1 d, 2 sign, 3 partBase, 4 accBase, 5 compBase.
 */
export function foldKernel(): KernelSource {
  return src(
    [["part", "f32"], ["acc", "f32"], ["comp", "f32"]],
    treeSum(64) + `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg);
  if (i >= pu(1u)) { return; }
  let P = pu(0u); let d = pu(1u); let pb = pu(3u);
  var s = 0.0; var c = 0.0;
  for (var p = li; p < P; p = p + 64u) {
    let y = part[pb + p * d + i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  let tot = redSum(li, s - c) * pf(2u);
  if (li == 0u) {
    let ai = pu(4u) + i; let ci = pu(5u) + i;
    let sum = acc[ai]; let y = tot - comp[ci]; let t = sum + y;
    comp[ci] = (t - sum) - y;
    acc[ai] = t;
  }
}`,
  );
}

/** out[outBase + i] = (accumulate ? out : 0) + (acc[i] − comp[i]) · scale, i < d.
 * Params: 0 d, 1 scale, 2 accumulate, 3 accBase, 4 compBase, 5 outBase. */
export function finishKernel(): KernelSource {
  return src(
    [["acc", "f32"], ["comp", "f32"], ["out", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 64u + li;
  if (i >= pu(0u)) { return; }
  let v = (acc[pu(3u) + i] - comp[pu(4u) + i]) * pf(1u);
  let o = pu(5u) + i;
  out[o] = select(0.0, out[o], pu(2u) != 0u) + v;
}`,
  );
}

/** part[g] = Σ a[base + i]², i in workgroup g's range. Params: 0 n, 1 base, 2 epw, 3 partBase. */
export function sumSquaresKernel(): KernelSource {
  return src(
    [["a", "f32"], ["part", "f32"]],
    treeSum(256) + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let n = pu(0u); let base = pu(1u); let epw = pu(2u);
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
  if (li == 0u) { part[pu(3u) + g] = tot; }
}`,
  );
}

/**
 * Column sums over row blocks: part[rb·d + i] = Σ_{rows b of block rb} a[b·d + i].
 * Workgroups: (i block of 64) × (row block). Params: 0 nRows, 1 d, 2 aBase, 3 R, 4 nib, 5 partBase.
 */
export function colSumKernel(): KernelSource {
  return src(
    [["a", "f32"], ["part", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let nib = pu(4u); let rb = g / nib; let i = (g % nib) * 64u + li;
  let d = pu(1u);
  if (i >= d) { return; }
  let R = pu(3u); let b0 = rb * R; let b1 = min(b0 + R, pu(0u)); let ab = pu(2u);
  var s = 0.0; var c = 0.0;
  for (var b = b0; b < b1; b = b + 1u) {
    let y = a[ab + b * d + i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  part[pu(5u) + rb * d + i] = s;
}`,
  );
}

/**
 * Σ_e gv[e] · W[idx_e − lo, i] over entry blocks, for entries with lo ≤ idx_e < hi:
 * part[blk·d + i]. Workgroups: (i block of 64) × (entry block).
 * Params: 0 cap, 1 rows, 2 d, 3 EB, 4 lo, 5 hi, 6 wBase, 7 nib, 8 partBase.
 */
export function entryWeightSumKernel(): KernelSource {
  return src(
    [["rowPtr", "u32"], ["idx", "u32"], ["gv", "f32"], ["Wm", "f32"], ["part", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let nib = pu(7u); let blk = g / nib; let i = (g % nib) * 64u + li;
  let d = pu(2u);
  if (i >= d) { return; }
  let total = min(rowPtr[pu(1u)], pu(0u));
  let EB = pu(3u); let e0 = blk * EB; let e1 = min(e0 + EB, total);
  let lo = pu(4u); let hi = pu(5u); let wb = pu(6u);
  var s = 0.0; var c = 0.0;
  for (var e = e0; e < e1; e = e + 1u) {
    let j = idx[e];
    if (j < lo || j >= hi) { continue; }
    let y = gv[e] * Wm[wb + (j - lo) * d + i] - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  part[pu(8u) + blk * d + i] = s;
}`,
  );
}

// ---- losses ---------------------------------------------------------------------------------

/**
 * One prefix g of the reconstruction loss on an element chunk:
 *   gs[i] = (hasNext ? gn[i] : 0) + coef · (xh[i] − x[i]);  part[wg] = Σ wgt · (xh − x)².
 * gn is a scratch copy of prefix g+1's gradient (a second binding of gradS could alias gs).
 * Params: 0 n, 1 xhBase, 2 xBase, 3 gnBase, 4 gsBase, 5 hasNext, 6 coef, 7 wgt, 8 partBase.
 */
export function reconKernel(): KernelSource {
  return src(
    [["xh", "f32"], ["X", "f32"], ["gn", "f32"], ["gs", "f32"], ["part", "f32"]],
    treeSum(256) + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let n = pu(0u); let hasNext = pu(5u) != 0u; let coef = pf(6u); let wgt = pf(7u);
  var s = 0.0;
  for (var q = 0u; q < 4u; q = q + 1u) {
    let i = g * 1024u + q * 256u + li;
    if (i < n) {
      let r = xh[pu(1u) + i] - X[pu(2u) + i];
      var a = coef * r;
      if (hasNext) { a = gn[pu(3u) + i] + a; }
      gs[pu(4u) + i] = a;
      s += wgt * r * r;
    }
  }
  let tot = redSum(li, s);
  if (li == 0u) { part[pu(8u) + g] = tot; }
}`,
  );
}

/**
 * AuxK column statistics over row blocks of a row chunk, with e = x − xh:
 *   mode 0: partA[rb·d + i] = Σ e,  partB[rb·d + i] = Σ (e − ê)²
 *   mode 1: partA[rb·d + i] = Σ (e − mean_i)²
 * Params: 0 nRows, 1 d, 2 xBase, 3 xhBase, 4 eaBase, 5 R, 6 nib, 7 mode, 8 meanBase,
 * 9 partABase, 10 partBBase.
 */
export function auxColsKernel(): KernelSource {
  return src(
    [["X", "f32"], ["xh", "f32"], ["ea", "f32"], ["mean", "f32"], ["partA", "f32"], ["partB", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let nib = pu(6u); let rb = g / nib; let i = (g % nib) * 64u + li;
  let d = pu(1u);
  if (i >= d) { return; }
  let R = pu(5u); let b0 = rb * R; let b1 = min(b0 + R, pu(0u));
  let mode = pu(7u);
  var mu = 0.0;
  if (mode == 1u) { mu = mean[pu(8u) + i]; }
  var sA = 0.0; var cA = 0.0; var sB = 0.0; var cB = 0.0;
  for (var b = b0; b < b1; b = b + 1u) {
    let o = b * d + i;
    let e = X[pu(2u) + o] - xh[pu(3u) + o];
    var vA = e;
    if (mode == 1u) { let c = e - mu; vA = c * c; }
    else {
      let r = e - ea[pu(4u) + o];
      let yB = r * r - cB; let tB = sB + yB; cB = (tB - sB) - yB; sB = tB;
    }
    let yA = vA - cA; let tA = sA + yA; cA = (tA - sA) - yA; sA = tA;
  }
  partA[pu(9u) + rb * d + i] = sA;
  if (mode == 0u) { partB[pu(10u) + rb * d + i] = sB; }
}`,
  );
}

/**
 * AuxK scalars: num = accN/B, den = accD/B; loss = alpha·num/den (0 if not finite) → out;
 * sc = alpha·(−2/B)/den (0 if not finite). Params: 0 alpha, 1 invB, 2 nBase, 3 dBase, 4 outBase,
 * 5 scBase, 6 nCompBase, 7 dCompBase, 8 minus2overB.
 */
export function auxFinalKernel(): KernelSource {
  return src(
    [["accN", "f32"], ["accD", "f32"], ["out", "f32"], ["sc", "f32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  let alpha = pf(0u); let invB = pf(1u);
  let num = (accN[pu(2u)] - accN[pu(6u)]) * invB;
  let den = (accD[pu(3u)] - accD[pu(7u)]) * invB;
  var loss = 0.0; var s = 0.0;
  if (den > 0.0 && isFinite(num) && isFinite(den)) {
    let l = alpha * num / den;
    let ss = alpha * pf(8u) / den;
    if (isFinite(l) && isFinite(ss)) { loss = l; s = ss; }
  }
  out[pu(4u)] = loss;
  sc[pu(5u)] = s;
}`,
  );
}

/** gs[i] = sc · ((x − xh) − ea) on an element chunk. Params: 0 n, 1 xBase, 2 xhBase, 3 eaBase,
 * 4 gsBase, 5 scBase. */
export function auxGradKernel(): KernelSource {
  return src(
    [["X", "f32"], ["xh", "f32"], ["ea", "f32"], ["gs", "f32"], ["sc", "f32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i >= pu(0u)) { return; }
  let s = sc[pu(5u)];
  let e = X[pu(1u) + i] - xh[pu(2u) + i];
  gs[pu(4u) + i] = s * (e - ea[pu(3u) + i]);
}`,
  );
}

/** gradVal[e] += lambda and part[wg] = Σ val[e] over valid entries. Params: 0 cap, 1 rows,
 * 2 lambda, 3 partBase. */
export function l1Kernel(): KernelSource {
  return src(
    [["rowPtr", "u32"], ["val", "f32"], ["gv", "f32"], ["part", "f32"]],
    treeSum(256) + `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  let e = g * 256u + li;
  let total = min(rowPtr[pu(1u)], pu(0u));
  var s = 0.0;
  if (e < total) {
    gv[e] += pf(2u);
    s = val[e];
  }
  let tot = redSum(li, s);
  if (li == 0u) { part[pu(3u) + g] = tot; }
}`,
  );
}

// ---- optimiser ------------------------------------------------------------------------------

/**
 * Row-wise ops on [rows, d], one invocation per row (no workgroup barriers: they are costly on
 * software rasterisers):
 *   mode 0 (projectDecoderGrad): G[r] −= (W[r]·G[r] / |W[r]|²) W[r]   (skip |W[r]| = 0)
 *   mode 1 (renormRows):         W[r] /= |W[r]|                       (skip |W[r]| = 0)
 * Params: 0 nRows, 1 d, 2 wBase, 3 gBase, 4 mode.
 */
export function rowOpKernel(): KernelSource {
  return src(
    [["Wm", "f32"], ["Gm", "f32"]],
    `
@compute @workgroup_size(64) fn main(${ENTRY}) {
  let r = wgLin(wid, nwg) * 64u + li;
  if (r >= pu(0u)) { return; }
  let d = pu(1u); let wo = pu(2u) + r * d; let go = pu(3u) + r * d; let mode = pu(4u);
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

/**
 * torch.optim.Adam step on an element chunk, with clip scale min(1, maxNorm/(sqrt(ns)+1e-6)).
 * Params: 0 n, 1 pBase, 2 gBase, 3 mBase, 4 vBase, 5 b1, 6 b2, 7 1−b1, 8 1−b2, 9 stepSize,
 * 10 sqrt(bc2), 11 eps, 12 clip, 13 maxNorm, 14 nsBase.
 */
export function adamKernel(): KernelSource {
  return src(
    [["P", "f32"], ["Gr", "f32"], ["M", "f32"], ["V", "f32"], ["ns", "f32"]],
    `
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let i = wgLin(wid, nwg) * 256u + li;
  if (i >= pu(0u)) { return; }
  var scale = 1.0;
  if (pu(12u) != 0u) { scale = min(1.0, pf(13u) / (sqrt(ns[pu(14u)]) + 1e-6)); }
  let g = Gr[pu(2u) + i] * scale;
  let mi = pu(3u) + i; let vi = pu(4u) + i; let pi = pu(1u) + i;
  let m = pf(5u) * M[mi] + pf(7u) * g;
  let v = pf(6u) * V[vi] + pf(8u) * g * g;
  M[mi] = m;
  V[vi] = v;
  P[pi] = P[pi] - pf(9u) * m / (sqrt(v) / pf(10u) + pf(11u));
}`,
  );
}

// ---- training state -------------------------------------------------------------------------

/** mn[0] = min(mn[0], bits of the smallest positive val among valid entries). Params: 0 cap, 1 rows. */
export function minPositiveKernel(): KernelSource {
  return src(
    [["rowPtr", "u32"], ["val", "f32"], ["mn", "atomic<u32>"]],
    `
var<workgroup> lm: atomic<u32>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  if (li == 0u) { atomicStore(&lm, 0x7f800000u); }
  workgroupBarrier();
  let e = g * 256u + li;
  let total = min(rowPtr[pu(1u)], pu(0u));
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

/** thr = thr < 0 ? m : beta·thr + (1 − beta)·m with m from mn (0 if none). Params: 0 beta,
 * 1 thrBase, 2 1−beta. */
export function emaKernel(): KernelSource {
  return src(
    [["mn", "u32"], ["thr", "f32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  let mb = mn[0];
  let m = select(bitcast<f32>(mb), 0.0, mb >= 0x7f800000u);
  let ti = pu(1u);
  let t = thr[ti];
  thr[ti] = select(pf(0u) * t + pf(2u) * m, m, t < 0.0);
}`,
  );
}

/**
 * Dead-latent bookkeeping on a latent chunk. Params: 0 n, 1 cpBase, 2 cBase, 3 mBase, 4 rows (f32),
 * 5 deadAfter (f32, rounded up).
 */
export function deadKernel(): KernelSource {
  return src(
    [["colPtr", "u32"], ["counter", "f32"], ["mask", "u32"], ["cnt", "atomic<u32>"]],
    `
var<workgroup> ld: atomic<u32>;
@compute @workgroup_size(256) fn main(${ENTRY}) {
  let g = wgLin(wid, nwg);
  if (g >= nGroups()) { return; }
  if (li == 0u) { atomicStore(&ld, 0u); }
  workgroupBarrier();
  let j = g * 256u + li;
  if (j < pu(0u)) {
    let cp = pu(1u) + j;
    let ci = pu(2u) + j;
    var c = counter[ci] + pf(4u);
    if (colPtr[cp + 1u] > colPtr[cp]) { c = 0.0; }
    counter[ci] = c;
    let dead = c >= pf(5u);
    mask[pu(3u) + j] = select(0u, 1u, dead);
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

/** out[outBase] = f32(cnt[0]). Params: 0 outBase. */
export function countToFloatKernel(): KernelSource {
  return src(
    [["cnt", "u32"], ["out", "f32"]],
    `
@compute @workgroup_size(1) fn main(${ENTRY}) {
  out[pu(0u)] = f32(cnt[0]);
}`,
  );
}
