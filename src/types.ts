/**
 * Types shared across areas (data → train → metrics → grid/report). Owned by the lead: change
 * only by asking. Every area's own types live in its own files.
 */

/** The paper's layer names; the embedded default maps each to a depth of its own encoder. */
export type PaperLayer = "11" | "17" | "22" | "23" | "last";
export const PAPER_LAYERS: readonly PaperLayer[] = ["11", "17", "22", "23", "last"];

/**
 * An activation matrix [n, cols] on the host: dense row-major, or sparse CSR with implicit
 * zeros (entries of a row in ascending column order).
 */
export type ActMatrix =
  | { kind: "dense"; n: number; cols: number; data: Float32Array }
  | {
    kind: "csr";
    n: number;
    cols: number;
    rowPtr: Uint32Array; // [n + 1]
    idx: Uint32Array; // [nnz]
    val: Float32Array; // [nnz]
  };

/** Summary of per-neuron MS scores (NaN scores — constant neurons — are excluded and counted). */
export interface MsSummary {
  /** Name of the similarity source, e.g. "labels", "inceptionv3", "dinov2". */
  encoder: string;
  mean: number;
  std: number;
  min: number;
  max: number;
  /** Number of neurons with a NaN score (constant activation on the evaluation set). */
  nanCount: number;
  /** Number of neurons scored (including NaN ones). */
  count: number;
  /** Sorted (descending) non-NaN scores resampled to at most 200 points, for plots. */
  curve: number[];
}

/**
 * Where a result comes from. A finished case is reused only when every field matches the
 * current run (src/run/provenance.ts).
 */
export interface Provenance {
  /** deno.json "version". */
  monobench: string;
  /** `git rev-parse HEAD` of the checkout, or "unknown". */
  gitCommit: string;
  /** sha256 of deno.lock, or "unknown". */
  denoLock: string;
  /** Deno version. */
  deno: string;
  /** Compute backend name and its device description. */
  backend: string;
  device: string;
  /** sha256 of the result-relevant part of the run config (src/run/config.ts). */
  configHash: string;
  /** Content hashes of the activation stores read, by role (e.g. "train:last", "similarity:labels"). */
  data: Record<string, string>;
  /** Seed of init and data order. */
  seed: number;
}

/** Everything measured for one benchmark case (one trained SAE, one seed). */
export interface CaseResult {
  id: string;
  /** Seed of this replicate (cases trained with `--seeds N` give one CaseResult per seed). */
  seed: number;
  layer: PaperLayer;
  /** The embedded/user encoder's layer the paper layer is mapped to. */
  sourceLayer: string;
  sae: string;
  expansion: number;
  d: number;
  width: number;
  k: number;
  steps: number;
  batchSize: number;
  lr: number;
  backend: string;
  trainSeconds: number;
  /** Training loss (reconstruction part) averaged over the last 1 % of steps. */
  finalLoss: number;
  /** MS of the SAE latents, one summary per similarity source. */
  ms: MsSummary[];
  /** Fraction of non-NaN latents scoring above the mean raw-neuron MS of the same layer. */
  fracAboveRaw: Record<string, number>;
  /** R² in percent (the paper's Table A9 metric; see metrics for the variant used). */
  r2: number;
  /** Named FVE / R² variants (fractions, not percent). */
  fve: Record<string, number>;
  /** Test-time L0 (thresholded encode), mean active latents per sample. */
  l0: number;
  /** Dead latents: never active on the evaluation set. */
  deadCount: number;
  deadFraction: number;
  /** Latents the trainer counted as dead (AuxK bookkeeping) at the end of training. */
  deadTrain: number;
  /** Checkpoint directory (cfg.json + sae_weights.safetensors), relative to the run dir. */
  checkpoint: string;
  /** Where the result comes from (always present in result.json and report.json). */
  provenance?: Provenance;
}

/** Raw-neuron ("No SAE") measurements of one layer. */
export interface LayerResult {
  layer: PaperLayer;
  sourceLayer: string;
  d: number;
  ms: MsSummary[];
}
