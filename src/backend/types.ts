/**
 * The compute-backend contract shared by the CPU backend (reference / oracle, `cpu.ts`) and the
 * WebGPU backends (`webgpu/`). The SAE trainer only talks to this interface, so every backend
 * trains the same model; the GPU kernels are tested op-by-op against the CPU backend.
 *
 * Conventions
 * - All matrices are row-major. Weight matrices are stored one row per latent:
 *   `Wenc` is [ω, d] (row j = encoder direction of latent j), `Wdec` is [ω, d] (row j = decoder
 *   direction of latent j, the paper's "column" of W_dec).
 * - Ops are *enqueued*: they return nothing and may run asynchronously. Only `read` (and `sync`)
 *   wait. A backend must execute ops in call order. Host numbers passed to ops (lr, step, k…)
 *   are captured at call time.
 * - Sparse codes use CSR ({@link Codes}); entries of a row are in ascending latent order.
 * - "accumulate" arguments: when true the op adds into the output, otherwise it overwrites it.
 * - Scalars that must stay on the device (thresholds, losses, norms) live in small f32 tensors
 *   addressed by `slot` (an element index).
 */
import type { Expr } from "../compute/expr.ts";

export type DType = "f32" | "u32";

/** Opaque device tensor. `shape` is the logical shape; element count is `size`. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  readonly dtype: DType;
}

/**
 * Sparse codes of a [rows, cols] activation matrix in CSR form.
 * `rowPtr[r]..rowPtr[r+1]` index `idx`/`val` for row r; at most `cap` entries in total
 * (entries past `cap` are dropped and `rowPtr` is clamped to `cap`).
 */
export interface Codes {
  readonly rows: number;
  readonly cols: number;
  readonly cap: number;
  readonly rowPtr: Tensor; // u32 [rows + 1]
  readonly idx: Tensor; // u32 [cap]  latent index
  readonly val: Tensor; // f32 [cap]  activation value
}

/**
 * Column-major (per-latent) view of a {@link Codes}: for latent j, `colPtr[j]..colPtr[j+1]`
 * index `row` (the sample) and `entry` (the position of that entry in the CSR arrays).
 * The order of entries inside one column is unspecified.
 */
export interface CodesT {
  readonly rows: number;
  readonly cols: number;
  readonly cap: number;
  readonly colPtr: Tensor; // u32 [cols + 1]
  readonly row: Tensor; // u32 [cap]
  readonly entry: Tensor; // u32 [cap]
}

/** Threshold for {@link Backend.gather}: one scalar at `t[slot]`, or one value per row. */
export type Threshold =
  | { kind: "scalar"; t: Tensor; slot: number }
  | { kind: "rows"; t: Tensor };

/**
 * How an element-wise argument is indexed in a [rows, cols] index space (see {@link EwSpace}):
 * "full" one value per element, "row" one per row ([rows]), "col" one per column ([cols]),
 * "scalar" the single value `t[slot]`.
 */
export type Bcast = "full" | "row" | "col" | "scalar";

/** A named argument of an element-wise op: a tensor, or a host constant captured at call time. */
export type EwArg = { t: Tensor; bc: Bcast; slot?: number } | { c: number };

/**
 * Index space of an element-wise op: a dense row-major [rows, cols] matrix, or the valid entries
 * of CSR codes (entry e of sample row r at latent column idx[e]; "full" arguments are entry
 * vectors [cap]). Reductions of entries to columns need the transpose `codesT`.
 */
export type EwSpace =
  | { kind: "dense"; rows: number; cols: number }
  | { kind: "entries"; codes: Codes; codesT?: CodesT };

/** Target of a reduction: one value, one per row ([rows]) or one per column ([cols]). */
export type ReduceTo = "scalar" | "rows" | "cols";

export interface MatmulOptions {
  /** Use Aᵀ: a is [K, M]. */
  ta?: boolean;
  /** Use Bᵀ: b is [N, K]. */
  tb?: boolean;
  /** Add into c instead of overwriting it. */
  accumulate?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
}

export interface AdamParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** 1-based step number, used for bias correction (torch.optim.Adam semantics). */
  step: number;
}

/** Gradient clipping as torch.nn.utils.clip_grad_norm_: scale = min(1, maxNorm/(sqrt(normSq)+1e-6)). */
export interface ClipParams {
  /** f32 tensor holding the *squared* global gradient norm at `slot` (see `sumSquares`). */
  normSq: Tensor;
  slot: number;
  maxNorm: number;
}

export interface Backend {
  /** "cpu", "webgpu" (Deno built-in) or "dawn" (npm:webgpu). */
  readonly name: string;
  /** Human-readable device description (adapter name etc.). */
  readonly description: string;

  // ---- memory -------------------------------------------------------------------------------
  /** Upload host data. `data.length` must equal the product of `shape`. */
  tensor(data: Float32Array | Uint32Array, shape: number[]): Tensor;
  /** Zero-filled tensor. */
  zeros(shape: number[], dtype?: DType): Tensor;
  /** Overwrite a whole tensor (or from element `offset`) with host data. */
  write(t: Tensor, data: Float32Array | Uint32Array, offset?: number): void;
  /** Read back (waits for queued work). Returns Float32Array for f32, Uint32Array for u32. */
  read(t: Tensor): Promise<Float32Array | Uint32Array>;
  /** Fill every element with `value`. */
  fill(t: Tensor, value: number): void;
  /** dst[...] = src[...] (same size and dtype). */
  copy(src: Tensor, dst: Tensor): void;
  dispose(t: Tensor): void;
  /** Allocate CSR codes with capacity `cap` for a [rows, cols] matrix. */
  codes(rows: number, cols: number, cap: number): Codes;
  codesT(rows: number, cols: number, cap: number): CodesT;
  disposeCodes(c: Codes | CodesT): void;
  /** Wait for all queued work. */
  sync(): Promise<void>;
  /** Release the device. The backend is unusable afterwards. */
  destroy(): void;

  // ---- forward ------------------------------------------------------------------------------
  /**
   * Dense encoder: pre[b, j] = max(0, Σ_i (x[b, i] − bdec[i]) · Wenc[j, i] + benc[j]).
   * x: [B, d], Wenc: [ω, d], benc: [ω], bdec: [d], pre: [B, ω].
   */
  encode(x: Tensor, Wenc: Tensor, benc: Tensor, bdec: Tensor, pre: Tensor): void;

  /**
   * Exact k-th largest value (1-based k) over all elements of `values` (any shape, f32),
   * written to out[slot]. Selection by radix/histogram over the float bits — no full sort.
   * If k > size, writes −Infinity.
   */
  kthLargest(values: Tensor, k: number, out: Tensor, slot: number): void;

  /**
   * Per-row k-th largest of values [B, ω] among eligible columns (mask u32 [ω], 1 = eligible;
   * null = all eligible), written to out f32 [B]. Rows with fewer than k eligible columns get
   * −Infinity.
   */
  kthLargestRows(values: Tensor, k: number, mask: Tensor | null, out: Tensor): void;

  /**
   * Build CSR codes from values [B, ω]: entry (b, j) is kept iff values[b, j] > 0, the column
   * is eligible (mask as above) and values[b, j] >= thr (or > thr when `strict`), where thr is
   * the scalar or the row's threshold. Entries are written in ascending j per row.
   */
  gather(values: Tensor, thr: Threshold, mask: Tensor | null, strict: boolean, out: Codes): void;

  /** Build the per-latent transpose of `codes` (cols = codes.cols). */
  transpose(codes: Codes, out: CodesT): void;

  /**
   * Sparse decode with nested prefixes (Matryoshka). `groups` are cumulative latent bounds,
   * strictly increasing, last = ω (a plain SAE uses [ω]). For g < G:
   *   out[g, b, :] = bdec + Σ_{entries e of row b with idx_e < groups[g]} val_e · Wdec[idx_e, :]
   * bdec may be null (no bias). out: [G, B, d].
   */
  decode(codes: Codes, Wdec: Tensor, bdec: Tensor | null, groups: number[], out: Tensor): void;

  // ---- losses -------------------------------------------------------------------------------
  /**
   * Reconstruction loss over nested prefixes. xhat: [G, B, d], x: [B, d], weights: G numbers.
   *   loss = Σ_g weights[g] · (1/B) Σ_b ||xhat[g, b] − x[b]||²       → stats[slot]
   *   gradS[g] = Σ_{i ≥ g} weights[i] · (2/B) (xhat[i] − x)           → gradS [G, B, d]
   * gradS[g] is the gradient reaching a latent in group interval g (suffix sum over prefixes).
   */
  reconLossGrad(xhat: Tensor, x: Tensor, weights: number[], gradS: Tensor, stats: Tensor, slot: number): void;

  /**
   * AuxK loss (dictionary_learning): e = x − xhat[G−1] (detached), ê = auxRecon [B, d]:
   *   l = (1/B) Σ_b ||e_b − ê_b||²,  denom = (1/B) Σ_b ||e_b − mean_b(e)||²,
   *   loss = alpha · l / denom (0 if not finite)                      → stats[slot]
   *   gradS[0] = alpha · (−2/B)(e − ê) / denom (0 if not finite)      → gradS [1, B, d]
   */
  auxLossGrad(
    x: Tensor,
    xhat: Tensor,
    auxRecon: Tensor,
    alpha: number,
    gradS: Tensor,
    stats: Tensor,
    slot: number,
  ): void;

  /**
   * L1 penalty on code values (ReLU-L1 SAE): stats[slot] = lambda · Σ val (valid entries),
   * gradVal[e] += lambda for valid entries.
   */
  l1Grad(codes: Codes, gradVal: Tensor, lambda: number, stats: Tensor, slot: number): void;

  // ---- backward -----------------------------------------------------------------------------
  /**
   * Gradient w.r.t. code values: gradVal[e] (+)= gradS[g(idx_e), row_e, :] · Wdec[idx_e, :],
   * where g(j) is the group interval of latent j (groups as in `decode`; groups.length must
   * equal gradS.shape[0]). gradVal: f32 [codes.cap].
   */
  decodeBackward(
    codes: Codes,
    gradS: Tensor,
    Wdec: Tensor,
    groups: number[],
    gradVal: Tensor,
    accumulate: boolean,
  ): void;

  /**
   * Per-latent weight gradients, accumulated (+=) only into rows of latents present in codesT:
   *   gradWenc[j] += Σ_{e ∈ col j} gradVal[e] · (x[row_e] − bdec)
   *   gradBenc[j] += Σ_{e ∈ col j} gradVal[e]
   *   gradWdec[j] += Σ_{e ∈ col j} val[e] · gradS[g(j), row_e]      (skipped when gradWdec null)
   */
  latentGrads(
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
  ): void;

  /**
   * Bias gradient: gradBdec (+)= [Σ_b gradS[0, b, :] if withDecodePath] − Σ_e gradVal[e] · Wenc[idx_e, :].
   */
  bdecGrad(
    codes: Codes,
    gradVal: Tensor,
    Wenc: Tensor,
    gradS: Tensor,
    withDecodePath: boolean,
    gradBdec: Tensor,
    accumulate: boolean,
  ): void;

  // ---- optimiser ----------------------------------------------------------------------------
  /** stats[slot] = Σ over all tensors of Σ t² (f32 tensors). */
  sumSquares(ts: Tensor[], stats: Tensor, slot: number): void;
  /** Remove from each gradWdec row its component along the (normalised) Wdec row. */
  projectDecoderGrad(Wdec: Tensor, gradWdec: Tensor): void;
  /** One torch.optim.Adam step (no weight decay) on `param`, with the clip scale applied to grad. */
  adam(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamParams, clip: ClipParams | null): void;
  /** Scale every row of W [ω, d] to unit L2 norm (rows with zero norm are left unchanged). */
  renormRows(W: Tensor): void;

  // ---- primitives ---------------------------------------------------------------------------
  // The general compute layer: what an architecture written against the tape (src/compute/tape.ts)
  // runs on. The fused ops above are fast paths of the built-in variants.

  /**
   * Element-wise map: out[e] (+)= expr(args at e) for every element e of `space`. Dense: out is
   * [rows, cols]. Entries: out is [cap]; elements past the valid entries are set to 0 unless
   * accumulating. Every name of the {@link Expr} must be bound in `args`.
   */
  map(e: Expr, args: Record<string, EwArg>, space: EwSpace, out: Tensor, accumulate?: boolean): void;

  /**
   * Sum of expr(args at e) over the elements of `space`, to one value (out[slot]), one per row
   * (out [rows]) or one per column (out [cols]); overwrites unless `accumulate`.
   */
  reduce(
    e: Expr,
    args: Record<string, EwArg>,
    space: EwSpace,
    to: ReduceTo,
    out: Tensor,
    opts?: { accumulate?: boolean; slot?: number },
  ): void;

  /** c (+)= alpha · op(a) · op(b) with op(a) [M, K], op(b) [K, N], c [M, N]. */
  matmul(a: Tensor, b: Tensor, c: Tensor, opts?: MatmulOptions): void;

  /** Sparse × dense: out[b, :] (+)= Σ_{e ∈ row b} vals[e] · W[idx_e, :]. W [cols, d], out [rows, d]. */
  spmm(codes: Codes, vals: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void;

  /** Sampled dense × dense: out[e] (+)= A[row_e, :] · W[idx_e, :]. A [rows, d], W [cols, d], out [cap]. */
  sddmm(codes: Codes, A: Tensor, W: Tensor, out: Tensor, accumulate: boolean): void;

  /**
   * Transposed sparse × dense: out[j, :] (+)= Σ_{e ∈ column j} vals[e] · A[row_e, :]. A [rows, d],
   * out [cols, d]; without `accumulate` every row of out is written (0 for empty columns).
   */
  spmmT(codes: Codes, codesT: CodesT, vals: Tensor, A: Tensor, out: Tensor, accumulate: boolean): void;

  /** out[e] = dense[row_e, idx_e] for valid entries, 0 past them. dense [rows, cols], out [cap]. */
  gatherEntries(codes: Codes, dense: Tensor, out: Tensor): void;

  /** dense[row_e, idx_e] (+)= vals[e]; without `accumulate` every other element becomes 0. */
  scatterEntries(codes: Codes, vals: Tensor, dense: Tensor, accumulate: boolean): void;

  // ---- training state -----------------------------------------------------------------------
  /**
   * Inference-threshold EMA (reference BatchTopK): m = min over valid entries of val (0 if none);
   * if thr[slot] < 0 then thr[slot] = m else thr[slot] = beta·thr[slot] + (1 − beta)·m.
   */
  thresholdEma(codes: Codes, thr: Tensor, slot: number, beta: number): void;
  /**
   * Dead-latent bookkeeping: for each latent j, counter[j] = 0 if column j of codesT is
   * non-empty, else counter[j] + rows. Then mask[j] = counter[j] >= deadAfter ? 1 : 0 and
   * stats[slot] = number of dead latents. counter: f32 [ω], mask: u32 [ω].
   */
  updateDead(
    codesT: CodesT,
    counter: Tensor,
    deadAfter: number,
    mask: Tensor,
    stats: Tensor,
    slot: number,
  ): void;
}
