/**
 * Measure an existing SAE checkpoint (ours, a SAELens jumprelu / topk / standard one, or a
 * dictionary_learning BatchTopKSAE / MatroyshkaBatchTopKSAE `ae.pt` as the reference code
 * saves it) on an evaluation set: per-latent MS for every similarity source (plus the raw neurons of the same
 * layer for reference), R² / FVE variants, test-time L0 and dead latents — the numbers
 * `reproduce` reports for the SAEs it trains (src/run/pipeline.ts), for checkpoints you bring.
 */
import { join } from "node:path";
import type { Backend } from "../backend/types.ts";
import { fracAbove, msScores, summarizeMs } from "../metrics/ms.ts";
import { DEFAULT_RECON_BATCH, reconMetrics } from "../metrics/recon.ts";
import { getSae } from "../sae/registry.ts";
import type { SaeParams } from "../sae/types.ts";
import { CFG_FILE, checkpointLocation, loadSae } from "../train/checkpoint.ts";
import { encodeDataset } from "../train/encode.ts";
import type { MsSummary } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { jsonText } from "../util/json.ts";
import { isDictLearningPath, loadDictLearningSae } from "./dictlearn.ts";
import type { Matrix } from "./import.ts";

/** What was loaded, for the report. */
export interface SaeInfo {
  /** The path given (checkpoint directory, trainer folder or .pt file). */
  dir: string;
  /** Where the weights come from. */
  format: "monobench" | "saelens" | "dictionary_learning";
  /** The weights file actually read (cfg.json checkpoints: the directory). */
  file: string;
  /**
   * SAELens architecture of cfg.json ("jumprelu", "topk", "standard"), or the
   * dictionary_learning class ("BatchTopKSAE", "MatroyshkaBatchTopKSAE").
   */
  architecture: string;
  /** The monobench variant it runs as. */
  variant: string;
  d: number;
  width: number;
  /** k of topk / batchtopk (for a plain SAELens jumprelu only a placeholder: its threshold decides). */
  k: number;
  /** Scalar inference threshold in raw units (null: none). */
  threshold: number | null;
  normFactor: number;
  /** true for a monobench checkpoint (cfg.json has a "monobench" block). */
  monobench: boolean;
  /**
   * Provenance: SAELens fields of cfg.json when present (model_name, hook_name, …); for
   * dictionary_learning the trainer config (trainer_class, lr, steps, …) and the checkpoint step.
   */
  origin: Record<string, unknown>;
  /** Adjustments made while loading. */
  notes: string[];
}

export interface LoadedSae {
  params: SaeParams;
  info: SaeInfo;
}

const ORIGIN_KEYS = ["model_name", "hook_name", "hook_point", "hook_layer", "dataset_path", "context_size"];

const DICT_ORIGIN_KEYS = [
  "trainer_class",
  "dict_class",
  "lr",
  "steps",
  "auxk_alpha",
  "warmup_steps",
  "decay_start",
  "threshold_beta",
  "threshold_start_step",
  "seed",
  "group_fractions",
  "group_weights",
  "lm_name",
  "layer",
];

/** Load a dictionary_learning checkpoint (file or trainer folder) for {@link measureSae}. */
async function loadDictLearningForMeasure(path: string, step?: number | "final"): Promise<LoadedSae> {
  const s = await loadDictLearningSae(path, { step });
  const origin: Record<string, unknown> = { step: s.step ?? "final" };
  if (s.configPath) origin.config = s.configPath;
  for (const k of DICT_ORIGIN_KEYS) if (s.config?.[k] !== undefined) origin[k] = s.config[k];
  if (s.groupSizes) origin.group_sizes = s.groupSizes;
  return {
    params: s.params,
    info: {
      dir: path,
      format: "dictionary_learning",
      file: s.file,
      architecture: s.dictClass,
      variant: s.variant,
      d: s.d,
      width: s.width,
      k: s.k,
      threshold: s.threshold >= 0 ? s.threshold : null,
      normFactor: 1,
      monobench: false,
      origin,
      notes: s.notes,
    },
  };
}

/**
 * Load a checkpoint for {@link measureSae}: a dictionary_learning `ae.pt` file or trainer folder
 * (`step` picks `checkpoints/ae_<step>.pt` there, default 100000, or "final" for ae.pt), else a
 * cfg.json checkpoint through {@link loadSae}, adapting SAELens options it does not model:
 * `apply_b_dec_to_input: false` is folded into b_enc (b_enc + W_enc·b_dec, an exact rewrite);
 * `normalize_activations` other than "none" is refused (the scale is not in the weights).
 */
export async function loadSaeForMeasure(
  dir: string,
  opts: { step?: number | "final" } = {},
): Promise<LoadedSae> {
  if (await isDictLearningPath(dir)) return await loadDictLearningForMeasure(dir, opts.step);
  const loc = await checkpointLocation(dir);
  if (!loc) {
    const st = await Deno.stat(dir).catch(() => null);
    const trainer = await Deno.stat(join(dir, "trainer_0")).then((s) => s.isDirectory, () => false);
    throw new MonobenchError(
      st ? `no SAE checkpoint in ${dir} (missing ${CFG_FILE})` : `SAE checkpoint not found: ${dir}`,
      trainer
        ? `this is a dictionary_learning run folder: give its trainer_0 folder, --sae ${
          join(dir, "trainer_0")
        }`
        : "--sae takes a directory with cfg.json and sae_weights.safetensors (e.g. results/<run>/cases/<id>/sae), " +
          "or a dictionary_learning ae.pt / trainer_0 folder",
    );
  }
  check(opts.step === undefined, "--step picks a checkpoint of a dictionary_learning trainer folder");
  let raw: Record<string, unknown> = {};
  try {
    raw = JSON.parse(await Deno.readTextFile(join(loc, CFG_FILE)));
  } catch {
    // loadSae reports unreadable / malformed configs.
  }
  const params = await loadSae(dir);
  const monobench = raw.monobench !== null && typeof raw.monobench === "object";
  const notes: string[] = [];
  if (!monobench) {
    const norm = raw.normalize_activations;
    if (norm !== undefined && norm !== null && norm !== "none") {
      throw new MonobenchError(
        `${join(loc, CFG_FILE)}: normalize_activations = ${JSON.stringify(norm)} is not supported`,
        "the scaling is not part of the saved weights; fold it into W_enc/b_enc/W_dec/b_dec or use an SAE " +
          'saved with normalize_activations "none"',
      );
    }
    if (raw.apply_b_dec_to_input === false) {
      const { d, width } = params.cfg;
      const benc = new Float32Array(width);
      for (let j = 0; j < width; j++) {
        let s = params.benc[j];
        for (let i = 0; i < d; i++) s += params.Wenc[j * d + i] * params.bdec[i];
        benc[j] = s;
      }
      params.benc = benc;
      notes.push("apply_b_dec_to_input = false: folded W_enc·b_dec into b_enc");
    }
    if (raw.architecture === "jumprelu") {
      notes.push("SAELens jumprelu: runs as f·(f > threshold) with the (shared) per-latent threshold");
    }
  }
  const origin: Record<string, unknown> = {};
  for (const k of ORIGIN_KEYS) if (raw[k] !== undefined) origin[k] = raw[k];
  const arch = typeof raw.architecture === "string"
    ? raw.architecture
    : getSae(params.cfg.variant).architecture;
  return {
    params,
    info: {
      dir,
      format: monobench ? "monobench" : "saelens",
      file: loc,
      architecture: arch,
      variant: params.cfg.variant,
      d: params.cfg.d,
      width: params.cfg.width,
      k: params.cfg.k,
      threshold: params.threshold >= 0 ? params.threshold : null,
      normFactor: params.normFactor,
      monobench,
      origin,
      notes,
    },
  };
}

export interface MeasureData {
  /** The evaluation activations [N, d] (e.g. a manifest layer's eval store). */
  acts: Matrix;
  /** Paper layer name when measured on a manifest layer. */
  layer?: string | null;
  /** The manifest path when measured on a manifest. */
  manifest?: string | null;
  /** Similarity embeddings [N, D] of the same N images in the same order. */
  similarity: { name: string; matrix: Matrix }[];
}

export interface MeasureOptions {
  /** Thresholded encode (default true, as reference `encode`); false: the training activation. */
  useThreshold?: boolean;
  /** Rows per batch of fve_batchmean (default 4096, the reference's). */
  reconBatch?: number;
  log?: (line: string) => void;
}

export interface MeasureReport {
  format: "monobench-measure";
  version: 1;
  sae: SaeInfo;
  data: {
    acts: string;
    layer: string | null;
    manifest: string | null;
    n: number;
    d: number;
    sha256: string | null;
    similarity: { name: string; path: string; n: number; d: number; sha256: string | null }[];
  };
  backend: string;
  device: string;
  useThreshold: boolean;
  /** The paper's R² in percent (100 · fve.fve_batchmean). */
  r2: number;
  /** FVE / R² variants (fractions): fve_batchmean, r2_global, fve_uncentered. */
  fve: Record<string, number>;
  reconBatch: number;
  mse: number;
  /** Mean active latents per sample. */
  l0: number;
  /** Latents never active on the evaluation set. */
  deadCount: number;
  deadFraction: number;
  /** MS of the SAE latents, one summary per similarity source. */
  ms: MsSummary[];
  /** Fraction of non-NaN latents scoring above the mean raw-neuron MS, per source. */
  fracAboveRaw: Record<string, number>;
  /** MS of the raw neurons of the same activations ("No SAE"). */
  raw: { ms: MsSummary[] };
}

export interface MeasureOutput {
  report: MeasureReport;
  /** Per-latent MS per source (NaN: dead / constant / single-sample latents). */
  scores: { name: string; scores: Float64Array }[];
  /** Evaluation samples on which each latent is nonzero. */
  fires: Uint32Array;
}

/** Encode, reconstruct and score (see the module doc). */
export async function measureSae(
  backend: Backend,
  sae: LoadedSae,
  data: MeasureData,
  opts: MeasureOptions = {},
): Promise<MeasureOutput> {
  const log = opts.log ?? (() => {});
  const { params, info } = sae;
  const { acts } = data;
  const useThreshold = opts.useThreshold ?? true;
  const reconBatch = opts.reconBatch ?? DEFAULT_RECON_BATCH;
  check(
    acts.d === params.cfg.d,
    `the SAE in ${info.dir} takes d_in = ${params.cfg.d} but the activations ${acts.path} have D = ${acts.d}`,
    "measure an SAE on activations of the layer (and model) it was trained on",
  );
  check(acts.n >= 2, `${acts.path}: need at least 2 evaluation samples (got ${acts.n})`);
  const names = new Set<string>();
  for (const s of data.similarity) {
    check(!names.has(s.name), `similarity source "${s.name}" is given twice`);
    names.add(s.name);
    check(
      s.matrix.n === acts.n,
      `similarity "${s.name}" (${s.matrix.path}) has ${s.matrix.n} rows but the activations ${acts.path} have ${acts.n}`,
      "MS pairs each evaluation image's activations with the embedding of the same image: both must list " +
        "the same images in the same order",
    );
  }
  if (!useThreshold && !info.monobench && info.architecture === "jumprelu") {
    throw new MonobenchError(
      `--no-threshold needs a monobench BatchTopK/Matryoshka checkpoint; ${info.dir} is a plain SAELens ` +
        "jumprelu SAE whose only inference rule is its threshold",
    );
  }

  const x = acts.all();
  log(`encoding ${acts.n} samples (${info.width} latents, ${backend.name} backend)`);
  const codes = await encodeDataset(backend, params, x, { useThreshold });
  const rec = reconMetrics(x, acts.n, acts.d, codes, params.Wdec, params.bdec, { batchSize: reconBatch });
  const fires = new Uint32Array(info.width);
  if (codes.kind === "csr") {
    for (let t = 0; t < codes.rowPtr[codes.n]; t++) if (codes.val[t] !== 0) fires[codes.idx[t]]++;
  }
  const dense = { kind: "dense" as const, n: acts.n, cols: acts.d, data: x };
  const ms: MsSummary[] = [], rawMs: MsSummary[] = [];
  const fracAboveRaw: Record<string, number> = {};
  const scores: MeasureOutput["scores"] = [];
  for (const s of data.similarity) {
    const emb = s.matrix.all();
    log(`MS with ${s.name} (${s.matrix.d}-d embeddings): ${info.width} latents, ${acts.d} raw neurons`);
    const sc = msScores(codes, emb, s.matrix.d);
    const rawSummary = summarizeMs(msScores(dense, emb, s.matrix.d), s.name);
    ms.push(summarizeMs(sc, s.name));
    rawMs.push(rawSummary);
    fracAboveRaw[s.name] = fracAbove(sc, rawSummary.mean);
    scores.push({ name: s.name, scores: sc });
  }
  const report: MeasureReport = {
    format: "monobench-measure",
    version: 1,
    sae: info,
    data: {
      acts: acts.path,
      layer: data.layer ?? null,
      manifest: data.manifest ?? null,
      n: acts.n,
      d: acts.d,
      sha256: acts.sha256,
      similarity: data.similarity.map((s) => ({
        name: s.name,
        path: s.matrix.path,
        n: s.matrix.n,
        d: s.matrix.d,
        sha256: s.matrix.sha256,
      })),
    },
    backend: backend.name,
    device: backend.description,
    useThreshold,
    r2: rec.r2,
    fve: rec.fve,
    reconBatch,
    mse: rec.mse,
    l0: rec.l0,
    deadCount: rec.deadCount,
    deadFraction: rec.deadFraction,
    ms,
    fracAboveRaw,
    raw: { ms: rawMs },
  };
  return { report, scores, fires };
}

/** JSON text of a report (non-finite numbers become null). */
export function reportJson(report: MeasureReport): string {
  return jsonText(report);
}

/** Per-latent CSV: `latent,fires,<source>...`, one row per latent, NaN for unscored latents. */
export function scoresCsv(out: MeasureOutput): string {
  const lines = [["latent", "fires", ...out.scores.map((s) => s.name)].join(",")];
  for (let j = 0; j < out.fires.length; j++) {
    lines.push([j, out.fires[j], ...out.scores.map((s) => String(s.scores[j]))].join(","));
  }
  return lines.join("\n") + "\n";
}

function f(v: number, digits = 4): string {
  return Number.isFinite(v) ? v.toFixed(digits) : "NaN";
}

/** Human-readable summary of a report. */
export function formatMeasure(r: MeasureReport): string {
  const s = r.sae;
  const lines: string[] = [];
  const thr = s.threshold === null ? "" : ` threshold=${s.threshold.toPrecision(4)}`;
  const k = s.variant === "relu" || (!s.monobench && s.architecture === "jumprelu") ? "" : ` k=${s.k}`;
  const name = s.format === "dictionary_learning" ? s.file : s.dir;
  lines.push(`SAE      ${name}: ${s.architecture} (${s.variant}) d=${s.d} width=${s.width}${k}${thr}`);
  for (const n of s.notes) lines.push(`         note: ${n}`);
  const where = r.data.layer ? ` (layer ${r.data.layer} of ${r.data.manifest})` : "";
  lines.push(`data     ${r.data.acts}${where}: ${r.data.n} × ${r.data.d}`);
  lines.push(
    `backend  ${r.backend} (${r.device}); ${r.useThreshold ? "thresholded" : "training-activation"} encode`,
  );
  lines.push(
    `R²       ${f(r.r2, 2)} %  (fve_batchmean ${f(r.fve.fve_batchmean)}, r2_global ${f(r.fve.r2_global)}, ` +
      `fve_uncentered ${f(r.fve.fve_uncentered)}; batches of ${r.reconBatch})`,
  );
  lines.push(
    `L0       ${f(r.l0, 2)}   dead latents ${r.deadCount}/${s.width} (${f(100 * r.deadFraction, 1)} %)`,
  );
  if (r.ms.length === 0) {
    lines.push("MS       (no similarity source given)");
    return lines.join("\n");
  }
  const w = Math.max(6, ...r.ms.map((m) => m.encoder.length));
  lines.push(
    `MS       ${"source".padEnd(w)}  ${"mean ± std".padEnd(17)}  ${"min".padStart(7)}  ${
      "max".padStart(7)
    }  ` +
      `${"NaN".padStart(5)}  ${"raw mean".padStart(8)}  >raw`,
  );
  for (const [i, m] of r.ms.entries()) {
    const raw = r.raw.ms[i];
    lines.push(
      `         ${m.encoder.padEnd(w)}  ${`${f(m.mean)} ± ${f(m.std)}`.padEnd(17)}  ${
        f(m.min).padStart(7)
      }  ` +
        `${f(m.max).padStart(7)}  ${String(m.nanCount).padStart(5)}  ${f(raw.mean).padStart(8)}  ` +
        `${f(100 * r.fracAboveRaw[m.encoder], 1)} %`,
    );
  }
  return lines.join("\n");
}
