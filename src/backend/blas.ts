/**
 * CPU backend with the dense encoder matmul done by a GEMM library: the system's OpenBLAS
 * through Deno FFI (`cblas_sgemm`) by default, or any {@link GemmProvider} (the multi-threaded
 * backend in `mt.ts` passes onnxruntime's MLAS when OpenBLAS is absent). Every other op is the
 * TypeScript reference ({@link CpuBackend}), so this backend trains the same model as the oracle —
 * only faster, since the dense encoder is the one O(B·d·ω) op of a sparse SAE step; everything
 * after the top-K selection costs O(nnz·d).
 *
 * Needs `--allow-ffi` and an OpenBLAS shared library (Debian: `libopenblas0-pthread`). The
 * library is looked up by name; `MONOBENCH_BLAS` may name a path. Reference BLAS (no
 * `openblas_get_corename` symbol) is refused because it is slower than the TypeScript kernels.
 */
import { CpuBackend, f32 as data, u32 } from "./cpu.ts";
import type { Codes, CodesT, Tensor } from "./types.ts";

const CBLAS_ROW_MAJOR = 101;
const CBLAS_NO_TRANS = 111;
const CBLAS_TRANS = 112;

const SYMBOLS = {
  cblas_sgemm: {
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  openblas_get_corename: { parameters: [], result: "pointer" },
  openblas_get_num_threads: { parameters: [], result: "i32" },
  openblas_set_num_threads: { parameters: ["i32"], result: "void" },
} as const;

type BlasLib = Deno.DynamicLibrary<typeof SYMBOLS>;

const CANDIDATES = [
  "libopenblas.so.0",
  "libopenblas.so",
  "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
  "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
  "libopenblas.dylib",
  "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
];

let cached: { lib: BlasLib; core: string; threads: number } | null | undefined;

/** Open OpenBLAS once; null when unavailable (no FFI permission, no library, not OpenBLAS). */
export function openBlas(): { lib: BlasLib; core: string; threads: number } | null {
  if (cached !== undefined) return cached;
  cached = null;
  let names = CANDIDATES;
  try {
    const env = Deno.env.get("MONOBENCH_BLAS");
    if (env) names = [env];
  } catch { /* no env permission: use the defaults */ }
  for (const name of names) {
    try {
      const lib = Deno.dlopen(name, SYMBOLS) as BlasLib;
      const p = lib.symbols.openblas_get_corename();
      const core = p ? new Deno.UnsafePointerView(p).getCString() : "unknown";
      cached = { lib, core, threads: lib.symbols.openblas_get_num_threads() };
      return cached;
    } catch {
      // try the next name
    }
  }
  return null;
}

/** A dense float32 GEMM with cblas_sgemm semantics (row-major, leading dimensions as stored). */
export interface GemmProvider {
  /** "openblas", "mlas", "wasm" or "ts". */
  readonly kind: string;
  /** Human-readable description, e.g. "OpenBLAS 0.3.21 (Cooperlake, 2 threads)". */
  readonly description: string;
  /** C[M, N] = alpha · op(A) · op(B) + beta · C (alpha defaults to 1). */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
    alpha?: number,
  ): void;
  /** Optional fused encoder pre = ReLU((x − bdec) · Wencᵀ + benc); false = not handled. */
  encode?(
    x: Float32Array,
    W: Float32Array,
    benc: Float32Array,
    bdec: Float32Array,
    pre: Float32Array,
  ): boolean;
}

/** OpenBLAS as a {@link GemmProvider}; `threads` pins its thread count. Null when unavailable. */
export function openBlasGemm(threads?: number): GemmProvider | null {
  const b = openBlas();
  if (!b) return null;
  if (threads !== undefined) b.lib.symbols.openblas_set_num_threads(threads);
  const n = b.lib.symbols.openblas_get_num_threads();
  const sym = b.lib.symbols;
  return {
    kind: "openblas",
    description: `OpenBLAS (${b.core}, ${n} thread${n === 1 ? "" : "s"})`,
    sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc, alpha = 1) {
      if (M === 0 || N === 0) return;
      sym.cblas_sgemm(
        CBLAS_ROW_MAJOR,
        transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
        transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
        M,
        N,
        K,
        alpha,
        A,
        lda,
        B,
        ldb,
        beta,
        C,
        ldc,
      );
    },
  };
}

/**
 * Sparse codes restricted to the latents they use: `cols` (ascending latent ids), `pos[e]` the
 * dense column of entry e, and the entry → row map. Rebuilt by each op that uses it: O(nnz + ω),
 * small next to the GEMMs it enables.
 */
interface Active {
  rows: number;
  nnz: number;
  cols: Uint32Array;
  /** Dense column of each entry. */
  pos: Uint32Array;
  /** Row of each entry. */
  row: Uint32Array;
  /** Per group interval g: the dense column range [gStart[g], gStart[g+1]). */
  gStart: number[];
}

/**
 * Entries per (row × active latent) above which a sparse op is done as dense BLAS products on the
 * active latents. BLAS runs ~50× faster per flop than the scalar sparse loops, and the dense
 * operands cost rows·m to build, so 1/24 leaves a safe margin. The main BatchTopK path (K = 20
 * of thousands of latents) stays sparse; the AuxK path (d/2 of the dead latents) goes dense.
 */
const DENSE_MIN_DENSITY = 1 / 24;

export class BlasBackend extends CpuBackend {
  override readonly name: string = "blas";
  override readonly description: string;
  protected readonly provider: GemmProvider;

  /** Throws when OpenBLAS cannot be loaded and no provider is given; see {@link openBlas}. */
  constructor(provider?: GemmProvider) {
    super();
    const p = provider ?? openBlasGemm();
    if (!p) throw new Error("OpenBLAS is not available (needs --allow-ffi and libopenblas)");
    this.provider = p;
    this.description = `CPU + ${p.description} via FFI`;
  }

  /** The BLAS backend if OpenBLAS loads, else null. */
  static tryCreate(): BlasBackend | null {
    return openBlas() ? new BlasBackend() : null;
  }

  /** xc[B, d] = x − bdec (a hook: the multi-threaded backend splits it over threads). */
  protected center(X: Float32Array, bd: Float32Array, xc: Float32Array): void {
    const d = bd.length, B = X.length / d;
    for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) xc[b * d + i] = X[b * d + i] - bd[i];
  }

  /** Rows of P = benc, before the GEMM accumulates into them. */
  protected broadcastRows(P: Float32Array, be: Float32Array): void {
    for (let b = 0; b < P.length / be.length; b++) P.set(be, b * be.length);
  }

  protected reluInPlace(P: Float32Array): void {
    for (let i = 0; i < P.length; i++) if (!(P[i] > 0)) P[i] = 0;
  }

  /** Scratch for the centred inputs (the multi-threaded backend keeps it in shared memory). */
  protected centredScratch(n: number): Float32Array {
    return this.buf("xc", n);
  }

  override encode(x: Tensor, Wenc: Tensor, benc: Tensor, bdec: Tensor, pre: Tensor): void {
    const X = data(x), W = data(Wenc), be = data(benc), bd = data(bdec), P = data(pre);
    const d = bd.length, w = be.length, B = X.length / d;
    if (W.length !== w * d || P.length !== B * w || !Number.isInteger(B)) {
      throw new Error("encode: shape mismatch");
    }
    if (B === 0 || w === 0) return;
    if (this.provider.encode?.(X, W, be, bd, P)) return;
    const xc = this.centredScratch(X.length);
    this.center(X, bd, xc);
    // pre = benc (broadcast), then pre += xc · Wencᵀ, then ReLU. Row blocks keep i32 sizes safe.
    this.broadcastRows(P, be);
    const rowsPerCall = Math.max(1, Math.floor(2 ** 30 / Math.max(w, d)));
    for (let r0 = 0; r0 < B; r0 += rowsPerCall) {
      const rows = Math.min(rowsPerCall, B - r0);
      this.provider.sgemm(
        false,
        true,
        rows,
        w,
        d,
        xc.subarray(r0 * d, (r0 + rows) * d),
        d,
        W,
        d,
        1,
        P.subarray(r0 * w, (r0 + rows) * w),
        w,
      );
    }
    this.reluInPlace(P);
  }

  // ---- dense-block paths for dense-enough sparse codes ----------------------------------------
  private blasScratch = new Map<string, Float32Array>();

  protected buf(name: string, n: number): Float32Array {
    let b = this.blasScratch.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, Math.ceil((b?.length ?? 0) * 1.5)));
      this.blasScratch.set(name, b);
    }
    return b.subarray(0, n);
  }

  /** Active latents of `codes` when dense enough for BLAS, else null (use the sparse reference). */
  protected active(codes: Codes, groups: number[]): Active | null {
    // Without a GEMM library the sparse kernels are as fast per flop as a dense product.
    if (this.provider.kind === "ts" || this.provider.kind === "wasm") return null;
    const rp = u32(codes.rowPtr), idx = u32(codes.idx);
    const rows = codes.rows, nnz = rp[rows];
    if (nnz < 4096) return null;
    const mark = new Int32Array(codes.cols).fill(-1);
    let m = 0;
    for (let e = 0; e < nnz; e++) if (mark[idx[e]] < 0) mark[idx[e]] = m++;
    if (nnz < DENSE_MIN_DENSITY * rows * m) return null;
    // Renumber in ascending latent order so that group intervals are contiguous.
    const cols = new Uint32Array(m);
    let c = 0;
    for (let j = 0; j < codes.cols; j++) if (mark[j] >= 0) cols[c++] = j;
    for (let i = 0; i < m; i++) mark[cols[i]] = i;
    const pos = new Uint32Array(nnz), row = new Uint32Array(nnz);
    for (let b = 0; b < rows; b++) {
      for (let e = rp[b]; e < rp[b + 1]; e++) {
        pos[e] = mark[idx[e]];
        row[e] = b;
      }
    }
    const gStart = [0];
    let p = 0;
    for (const bound of groups) {
      while (p < m && cols[p] < bound) p++;
      gStart.push(p);
    }
    return { rows, nnz, cols, pos, row, gStart };
  }

  /** C[M, N] (+)= op(A) · op(B), row-major, with leading dimensions as stored. */
  protected gemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
  ): void {
    this.provider.sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc);
  }

  /** Rows `cols[lo..hi)` of W [ω, d] packed into a scratch [hi−lo, d]. */
  private packRows(name: string, W: Float32Array, d: number, cols: Uint32Array, lo: number, hi: number) {
    const out = this.buf(name, (hi - lo) * d);
    for (let i = lo; i < hi; i++) out.set(W.subarray(cols[i] * d, cols[i] * d + d), (i - lo) * d);
    return out;
  }

  /** Dense [rows, m] matrix of per-entry values `v` (zeros elsewhere). */
  private denseCodes(name: string, a: Active, v: Float32Array): Float32Array {
    const m = a.cols.length, D = this.buf(name, a.rows * m);
    D.fill(0);
    for (let e = 0; e < a.nnz; e++) D[a.row[e] * m + a.pos[e]] = v[e];
    return D;
  }

  override decode(codes: Codes, Wdec: Tensor, bdec: Tensor | null, groups: number[], out: Tensor): void {
    const a = this.active(codes, groups);
    if (!a) return super.decode(codes, Wdec, bdec, groups, out);
    const W = data(Wdec), o = data(out), val = data(codes.val);
    const B = codes.rows, d = W.length / codes.cols, m = a.cols.length, G = groups.length;
    if (o.length !== G * B * d) throw new Error("decode: out shape mismatch");
    const A = this.denseCodes("decA", a, val);
    const bd = bdec ? data(bdec) : null;
    for (let g = 0; g < G; g++) {
      const og = o.subarray(g * B * d, (g + 1) * B * d);
      if (g === 0) {
        if (bd) { for (let b = 0; b < B; b++) og.set(bd, b * d); }
        else og.fill(0);
      } else og.set(o.subarray((g - 1) * B * d, g * B * d));
      const lo = a.gStart[g], hi = a.gStart[g + 1];
      if (hi === lo) continue;
      const Wg = this.packRows("decW", W, d, a.cols, lo, hi);
      // og += A[:, lo:hi] · Wg
      this.gemm(false, false, B, d, hi - lo, A.subarray(lo), m, Wg, d, 1, og, d);
    }
  }

  override decodeBackward(
    codes: Codes,
    gradS: Tensor,
    Wdec: Tensor,
    groups: number[],
    gradVal: Tensor,
    accumulate: boolean,
  ): void {
    const a = this.active(codes, groups);
    if (!a) return super.decodeBackward(codes, gradS, Wdec, groups, gradVal, accumulate);
    const W = data(Wdec), gS = data(gradS), gv = data(gradVal);
    const B = codes.rows, d = W.length / codes.cols, m = a.cols.length;
    const M = this.buf("dbM", B * m);
    for (let g = 0; g < groups.length; g++) {
      const lo = a.gStart[g], hi = a.gStart[g + 1];
      if (hi === lo) continue;
      const Wg = this.packRows("dbW", W, d, a.cols, lo, hi);
      // M[:, lo:hi] = gS[g] (B×d) · Wgᵀ (d×(hi−lo))
      this.gemm(
        false,
        true,
        B,
        hi - lo,
        d,
        gS.subarray(g * B * d, (g + 1) * B * d),
        d,
        Wg,
        d,
        0,
        M.subarray(lo),
        m,
      );
    }
    for (let e = 0; e < a.nnz; e++) {
      const v = M[a.row[e] * m + a.pos[e]];
      gv[e] = accumulate ? gv[e] + v : v;
    }
  }

  override latentGrads(
    codes: Codes,
    codesT: CodesT,
    gradVal: Tensor,
    x: Tensor,
    bdec: Tensor,
    gradS: Tensor,
    groups: number[],
    gradWenc: Tensor,
    gradBenc: Tensor,
    gradWdec: Tensor | null,
  ): void {
    const a = this.active(codes, groups);
    if (!a) {
      return super.latentGrads(codes, codesT, gradVal, x, bdec, gradS, groups, gradWenc, gradBenc, gradWdec);
    }
    const gv = data(gradVal), val = data(codes.val), X = data(x), bd = data(bdec), gS = data(gradS);
    const gWe = data(gradWenc), gbe = data(gradBenc), gWd = gradWdec ? data(gradWdec) : null;
    const B = codes.rows, d = bd.length, m = a.cols.length;
    const GV = this.denseCodes("lgGV", a, gv);
    const xc = this.buf("lgX", B * d);
    for (let b = 0; b < B; b++) for (let i = 0; i < d; i++) xc[b * d + i] = X[b * d + i] - bd[i];
    // gradWenc[cols] += GVᵀ (m×B) · xc (B×d); gradBenc[cols] += column sums of GV.
    const R = this.buf("lgR", m * d);
    this.gemm(true, false, m, d, B, GV, m, xc, d, 0, R, d);
    const sums = new Float64Array(m);
    for (let e = 0; e < a.nnz; e++) sums[a.pos[e]] += gv[e];
    for (let i = 0; i < m; i++) {
      const j = a.cols[i];
      gbe[j] += sums[i];
      const r = R.subarray(i * d, i * d + d), o = j * d;
      for (let t = 0; t < d; t++) gWe[o + t] += r[t];
    }
    if (!gWd) return;
    // gradWdec[cols of group g] += Vᵀ[lo:hi] (·×B) · gS[g] (B×d).
    const V = this.denseCodes("lgV", a, val);
    for (let g = 0; g < groups.length; g++) {
      const lo = a.gStart[g], hi = a.gStart[g + 1];
      if (hi === lo) continue;
      this.gemm(
        true,
        false,
        hi - lo,
        d,
        B,
        V.subarray(lo),
        m,
        gS.subarray(g * B * d, (g + 1) * B * d),
        d,
        0,
        R,
        d,
      );
      for (let i = lo; i < hi; i++) {
        const r = R.subarray((i - lo) * d, (i - lo) * d + d), o = a.cols[i] * d;
        for (let t = 0; t < d; t++) gWd[o + t] += r[t];
      }
    }
  }
}
