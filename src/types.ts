/**
 * Types shared across areas (data → train → metrics → grid/report). Owned by the lead: change
 * only by asking. Every area's own types live in its own files.
 */

/**
 * A layer name, as the data calls it (a manifest's layer, an experiment's): letters, digits, "_"
 * and "." ({@link LAYER_NAME_PATTERN}), e.g. "11" or "last". "last" always means the final
 * projection (the reference's layer −1). The name is part of case ids and file names.
 */
export type LayerName = string;
/** Any layer name; kept under the old name of the fixed CLIP union for the modules that use it. */
export type PaperLayer = LayerName;
/** Valid layer names (no "-": case ids `${sae}-${layer}-x${ε}-k${K}` stay readable from the right). */
export const LAYER_NAME_PATTERN: RegExp = /^[A-Za-z0-9_.]+$/;
/** The CLIP ViT-L layers of the paper's main grid; the embedded default names its five depths so. */
export const PAPER_LAYERS: readonly LayerName[] = ["11", "17", "22", "23", "last"];

/** Depth order of layer names: numbered layers by number, then other names alphabetically, "last" last. */
export function compareLayers(a: LayerName, b: LayerName): number {
  const rank = (l: string) => (l === "last" ? 2 : /^\d+$/.test(l) ? 0 : 1);
  const ra = rank(a), rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 0) return Number(a) - Number(b);
  return a < b ? -1 : a > b ? 1 : 0;
}

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
  /**
   * sha256 of the result-relevant part of the run config (src/run/config.ts); for a measured
   * reference checkpoint, which no config of ours trained, the sha256 of its ae.pt file.
   */
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
  layer: LayerName;
  /** The embedded/user encoder's layer the paper layer is mapped to. */
  sourceLayer: string;
  sae: string;
  expansion: number;
  d: number;
  width: number;
  k: number;
  /**
   * Training steps, batch size and base lr. A measured reference checkpoint (`deno task
   * measure-reference`) has its checkpoint's step (ae.pt: its config.json's steps), its trainer
   * config's lr (else the trainer's default rule for its width, what the scripts run) and the
   * scripts' batch size 4096, which dictionary_learning does not record; its trainSeconds,
   * finalLoss and deadTrain are NaN (null in JSON).
   */
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
  /**
   * Checkpoint directory (cfg.json + sae_weights.safetensors), relative to the run dir; for a
   * measured reference checkpoint its ae.pt file, relative to the measured folder.
   */
  checkpoint: string;
  /** Where the result comes from (always present in result.json and report.json). */
  provenance?: Provenance;
}

/** Raw-neuron ("No SAE") measurements of one layer. */
export interface LayerResult {
  layer: LayerName;
  sourceLayer: string;
  d: number;
  ms: MsSummary[];
}
