/**
 * SAE variant plug-in interfaces. There are two kinds, registered the same way (`registerSae`,
 * src/sae/registry.ts) and trained by the same generic trainer (src/train) on every backend:
 *
 * - {@link FusedSaeVariant}: the built-in encoder ReLU(W_enc(x − b_dec) + b_enc), unit-row decoder,
 *   Matryoshka prefixes and AuxK, run by fused backend ops; the variant picks the activation rule,
 *   an optional penalty on the codes and the decoder init. BatchTopK, Matryoshka, TopK and ReLU are
 *   written this way (the fast path).
 * - {@link SaeModelVariant}: an architecture with its own parameters and forward pass, written with
 *   the tape (src/compute/tape.ts); gradients come from the tape. JumpReLU, Gated and the
 *   MS-regularised SAE in examples/ are written this way.
 */
import type { Backend, Codes, Tensor } from "../backend/types.ts";
import type { Pattern, Tape, Var } from "../compute/tape.ts";
import type { Rng } from "../util/rng.ts";

/** SAELens `architecture` written to cfg.json. */
export type SaeArchitecture = "jumprelu" | "topk" | "standard" | "gated";

/** Values allowed in {@link SaeConfig.options} (JSON-serialisable). */
export type OptionValue = number | string | boolean | number[] | null;

/** Architecture config of one SAE (everything needed to rebuild the model; JSON-serialisable). */
export interface SaeConfig {
  /** Registry name of the variant ("batchtopk", "matryoshka", "topk", "relu", or a user one). */
  variant: string;
  /** Input dimension (d_in). */
  d: number;
  /** Number of latents ω (d_sae). */
  width: number;
  /** Sparsity K: per-sample average (BatchTopK, Matryoshka) or per-sample exact (TopK). */
  k: number;
  /** AuxK weight α (0 disables AuxK). */
  auxkAlpha: number;
  /** A latent is dead after this many training samples without firing. */
  deadAfterTokens: number;
  /** EMA factor of the inference threshold. */
  thresholdBeta: number;
  /** The threshold EMA is updated at (0-based) steps > thresholdStartStep. */
  thresholdStartStep: number;
  /** Matryoshka group fractions (sum 1); `[1]` for single-group variants. */
  groupFractions: number[];
  /**
   * Matryoshka loss weighting: "reference" = mean_i(L_i / G) (the public code, (1/G²)·Σ),
   * "paper" = Σ_i L_i (paper Eq. 4).
   */
  lossWeighting: "reference" | "paper";
  /** L1 coefficient λ of the ReLU-L1 SAE (loss += λ · mean_b ||f_b||₁). */
  l1: number;
  /** Free-form options of user variants (declared in their `defaults.options`). */
  options: Record<string, OptionValue>;
}

/**
 * Host copy of a trained SAE. Weights take **raw** (un-normalised) activations: the biases and
 * threshold are already multiplied by `normFactor` (as the reference's `scale_biases`).
 * Row-major, one row per latent: `Wenc` [ω, d], `Wdec` [ω, d].
 */
export interface SaeParams {
  cfg: SaeConfig;
  Wenc: Float32Array;
  benc: Float32Array;
  Wdec: Float32Array;
  bdec: Float32Array;
  /** Scalar inference threshold in raw units (−1 = never updated: plain ReLU). */
  threshold: number;
  /** The input normalisation factor used during training (informational; already folded in). */
  normFactor: number;
  /** Parameters of a {@link SaeModelVariant} beyond the four above, by name, in raw units. */
  extra?: Record<string, Float32Array>;
}

/** Arguments of the activation hooks. All ops are enqueued on `backend`. */
export interface ActivationArgs {
  backend: Backend;
  cfg: SaeConfig;
  /** Rows (samples) in this batch. */
  rows: number;
  /** Post-ReLU pre-activations [rows, ω]. */
  pre: Tensor;
  /** Output codes, allocated with the variant's capacity for `rows`. */
  out: Codes;
  /** Free f32 [rows] scratch tensor (per-row thresholds, or a scalar at slot 0). */
  scratch: Tensor;
}

export interface InferenceArgs extends ActivationArgs {
  /** f32 [1]: the scalar inference threshold in the units of `pre`. */
  threshold: Tensor;
  /** false: use the training activation instead of the threshold (reference `use_threshold`). */
  useThreshold: boolean;
}

export interface PenaltyArgs {
  backend: Backend;
  cfg: SaeConfig;
  rows: number;
  codes: Codes;
  /** Gradient w.r.t. code values, already holding the reconstruction part (add to it). */
  gradVal: Tensor;
  stats: Tensor;
  /** Write the penalty value (already weighted) to stats[slot]. */
  slot: number;
}

/** A variant on the fused fast path (see the module doc). */
export interface FusedSaeVariant {
  readonly kind?: "fused";
  /** Registry name (lower case, no spaces). */
  readonly name: string;
  /** One line for help texts and reports. */
  readonly description: string;
  /** SAELens architecture of the inference model. */
  readonly architecture: SaeArchitecture;
  /** Config defaults of this variant (over the generic ones in src/sae/config.ts). */
  readonly defaults: Partial<Omit<SaeConfig, "variant" | "d" | "width">>;
  /** Whether `k` is used (default true); if false, k is not validated against the width. */
  readonly usesK?: boolean;
  /** Whether training maintains the scalar inference threshold EMA. */
  readonly tracksThreshold: boolean;
  /** Extra validation of a resolved config (throw MonobenchError). */
  validate?(cfg: SaeConfig): void;
  /** Cumulative latent bounds of the nested prefixes, strictly increasing, last = width. */
  groups(cfg: SaeConfig): number[];
  /** Weight of each prefix's reconstruction loss (same length as `groups`). */
  reconWeights(cfg: SaeConfig): number[];
  /** Initial decoder [ω, d] with unit rows; the encoder starts as its copy (W_enc = W_decᵀ). */
  initDecoder(cfg: SaeConfig, rng: Rng): Float32Array;
  /** Capacity of the training codes for a batch of `rows`. */
  trainCapacity(cfg: SaeConfig, rows: number): number;
  /** Enqueue the training activation: pre → out. */
  trainActivation(a: ActivationArgs): void;
  /** Optional sparsity penalty on the training codes (e.g. L1). */
  penalty?(a: PenaltyArgs): void;
  /** Capacity of the inference codes for a batch of `rows`. */
  inferenceCapacity(cfg: SaeConfig, rows: number, useThreshold: boolean): number;
  /** Enqueue the inference activation (what `encodeDataset` returns): pre → out. */
  inferenceActivation(a: InferenceArgs): void;
}

// ---- tape-based architectures ------------------------------------------------------------------

/** Which field of {@link SaeParams} a model parameter is (the trainer's generic parts use them). */
export type ParamRole = "Wenc" | "benc" | "Wdec" | "bdec";

/**
 * How a parameter's checkpoint (raw-unit) value follows from its training value when inputs were
 * divided by the norm factor s: "input" scales with the input (biases, thresholds: ×s),
 * "log-input" is the log of such a quantity (+log s), "none" is unit-free (weights, log-gains).
 */
export type ParamUnits = "input" | "log-input" | "none";

export interface ParamSpec {
  /** Name (the SAELens tensor name where there is one, e.g. "b_gate", "log_threshold"). */
  name: string;
  shape: number[];
  /** Role in the generic trainer; every model has exactly one Wenc, benc, Wdec and bdec. */
  role?: ParamRole;
  units: ParamUnits;
  /**
   * Initial value: a constant, or values. Defaults: Wdec = the variant's `initDecoder`, Wenc = its
   * copy (W_enc = W_decᵀ), bdec = the trainer's geometric median (or 0), everything else 0.
   */
  init?: number | ((cfg: SaeConfig, rng: Rng) => Float32Array);
  /** Keep every row at unit norm (project the gradient, renormalise after each step). */
  unitRows?: boolean;
}

/** Arguments of {@link SaeModelVariant.forward}. */
export interface ModelForwardArgs {
  tape: Tape;
  cfg: SaeConfig;
  rows: number;
  /** The normalised batch [rows, d]. */
  x: Var;
  /** Parameters by {@link ParamSpec.name}. */
  p: Record<string, Var>;
  /**
   * Report the active latents and their values (call once, before reading `deadMask`): the
   * trainer updates the dead-latent counters from them, and the scalar inference threshold when
   * the variant tracks one.
   */
  track(codes: Pattern, acts: Var): void;
  /** u32 [ω], 1 = dead (valid after `track`). */
  deadMask: Tensor;
  /** Whether a latent can be dead yet (AuxK is exactly 0 before). */
  auxk: boolean;
  /** k_aux = min(d/2, ω) (reference `top_k_aux`). */
  kAux: number;
  /** 0-based step and total steps (for penalty warm-ups). */
  step: number;
  steps: number;
}

export interface ModelForwardResult {
  /** Reconstruction loss [1] (reported as "loss"). */
  loss: Var;
  /** Sparsity or other penalty [1] (reported as "penalty"). */
  penalty?: Var;
  /** Auxiliary loss [1] (reported as "aux"). */
  aux?: Var;
}

/** Arguments of {@link SaeModelVariant.encode} (inference, raw units, nothing recorded). */
export interface ModelEncodeArgs {
  tape: Tape;
  cfg: SaeConfig;
  rows: number;
  x: Var;
  p: Record<string, Var>;
  /** [1] scalar inference threshold in raw units (variants with `tracksThreshold`). */
  threshold: Var;
  /** false: use the training activation (reference `use_threshold=False`). */
  useThreshold: boolean;
}

/** One safetensors entry of a SAELens export. */
export interface ExportTensor {
  shape: number[];
  data: Float32Array;
}

/** A variant with its own parameters and forward pass, differentiated by the tape. */
export interface SaeModelVariant {
  readonly kind: "model";
  readonly name: string;
  readonly description: string;
  readonly architecture: SaeArchitecture;
  readonly defaults: Partial<Omit<SaeConfig, "variant" | "d" | "width">>;
  readonly usesK?: boolean;
  /** Maintain the scalar inference-threshold EMA from the tracked activations. */
  readonly tracksThreshold?: boolean;
  validate?(cfg: SaeConfig): void;
  /** The parameters (see {@link ParamSpec}). */
  params(cfg: SaeConfig): ParamSpec[];
  /** Initial decoder [ω, d] with unit rows. */
  initDecoder(cfg: SaeConfig, rng: Rng): Float32Array;
  /** The training forward pass: losses, with the active latents passed to `track`. */
  forward(a: ModelForwardArgs): ModelForwardResult;
  /** The inference activation: the codes and their values, what `encodeDataset` returns. */
  encode(a: ModelEncodeArgs): { codes: Pattern; acts: Var };
  /**
   * SAELens tensors of the inference checkpoint (raw units); default: W_enc [d, ω], b_enc, W_dec,
   * b_dec and every extra parameter under its name.
   */
  saeLensTensors?(p: SaeParams): Record<string, ExportTensor>;
  /** Inverse of `saeLensTensors`: the extra parameters (raw units) from the checkpoint tensors. */
  fromSaeLens?(
    cfg: SaeConfig,
    get: (name: string, shape: number[]) => Float32Array,
  ): Record<string, Float32Array>;
}

/** Any registered variant. */
export type SaeVariant = FusedSaeVariant | SaeModelVariant;

/** Narrowing helper. */
export function isModelVariant(v: SaeVariant): v is SaeModelVariant {
  return v.kind === "model";
}
