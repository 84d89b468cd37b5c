/**
 * SAE variant plug-in interface. A variant declares its config defaults, its decoder init, its
 * nested-prefix groups and loss weights, and how it turns post-ReLU pre-activations into sparse
 * codes at training and at inference time. The trainer (src/train) is generic and only talks to
 * the {@link Backend} through these hooks, so a variant written against the contract trains on
 * every backend. Register your own with `registerSae` (src/sae/registry.ts).
 */
import type { Backend, Codes, Tensor } from "../backend/types.ts";
import type { Rng } from "../util/rng.ts";

/** SAELens `architecture` written to cfg.json. */
export type SaeArchitecture = "jumprelu" | "topk" | "standard";

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

export interface SaeVariant {
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
