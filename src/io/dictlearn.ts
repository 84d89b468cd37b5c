/**
 * SAE checkpoints of dictionary_learning, the library the reference code vendors: the `ae.pt`
 * / `checkpoints/ae_<step>.pt` state dicts that its `trainSAE` writes with torch.save (a plain
 * dict of CPU tensors, biases and threshold already scaled to raw activations by
 * `scale_biases`), next to `trainer_0/config.json`. Two classes, recognised by their exact key
 * sets:
 *
 * | class                    | keys (shapes)                                                                      |
 * | ------------------------ | ---------------------------------------------------------------------------------- |
 * | `BatchTopKSAE`           | encoder.weight [ω, d], encoder.bias [ω], decoder.weight [d, ω], b_dec [d], k, threshold |
 * | `MatroyshkaBatchTopKSAE` | W_enc [d, ω], b_enc [ω], W_dec [ω, d], b_dec [d], k, threshold, group_sizes [G]    |
 *
 * Both encode with `f = ReLU(W_enc(x − b_dec) + b_enc)` and, at inference (`encode(x)`,
 * `use_threshold=True`), `f · (f > threshold)` with the scalar `threshold` buffer — exactly the
 * monobench batchtopk / matryoshka inference rule, so they load as those variants with
 * `threshold` set. A state dict that lacks `threshold` or `k` is refused: read as a plain ReLU
 * SAE it would keep every positive pre-activation (the bug SAELens had with these checkpoints,
 * PR #608), and there is deliberately no way to ask for that.
 */
import { basename, dirname, join } from "node:path";
import { getSae } from "../sae/registry.ts";
import { groupBounds, resolveSaeConfig } from "../sae/config.ts";
import type { SaeParams } from "../sae/types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { listDir } from "./fsutil.ts";
import { describeTensor, openPt, ptEntries, type PtTensor, readPtFloat, readPtInts } from "./pt.ts";

export type DictLearnClass = "BatchTopKSAE" | "MatroyshkaBatchTopKSAE";

const KEYS: Record<DictLearnClass, readonly string[]> = {
  BatchTopKSAE: ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"],
  MatroyshkaBatchTopKSAE: ["W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"],
};

const VARIANT: Record<DictLearnClass, "batchtopk" | "matryoshka"> = {
  BatchTopKSAE: "batchtopk",
  MatroyshkaBatchTopKSAE: "matryoshka",
};

/** The reference's --sae_model names of the two classes. */
export const SAE_MODEL_NAMES: Record<string, DictLearnClass> = {
  batch_top_k: "BatchTopKSAE",
  matroyshka_batch_top_k: "MatroyshkaBatchTopKSAE",
};

/** A loaded dictionary_learning checkpoint. */
export interface DictLearnSae {
  /** The state-dict file. */
  file: string;
  dictClass: DictLearnClass;
  variant: "batchtopk" | "matryoshka";
  d: number;
  width: number;
  k: number;
  /** Scalar inference threshold in raw units (negative: never updated, the encode is a ReLU). */
  threshold: number;
  /** Matryoshka group sizes (null for BatchTopK). */
  groupSizes: number[] | null;
  /** From the file name `ae_<step>.pt`; null for `ae.pt` (the final model) or other names. */
  step: number | null;
  /** The `trainer` block of the config.json next to it, when there is one. */
  config: Record<string, unknown> | null;
  configPath: string | null;
  params: SaeParams;
  notes: string[];
}

/** The fraction list that reproduces `sizes` exactly through groupSizes (int(f·ω), remainder last). */
function fractionsFor(sizes: number[], width: number): number[] {
  const f = sizes.map((s) => s / width);
  for (let i = 0; i < f.length - 1; i++) {
    // s/ω·ω can land just below s in floating point: nudge up until floor gives s back.
    while (Math.floor(f[i] * width) < sizes[i]) f[i] += Number.EPSILON * Math.max(1, f[i]);
  }
  f[f.length - 1] = 1 - f.slice(0, -1).reduce((a, b) => a + b, 0);
  return f;
}

function classify(path: string, keys: string[]): DictLearnClass {
  const has = (k: string) => keys.includes(k);
  const list = keys.length ? keys.join(", ") : "none";
  let cls: DictLearnClass | null = null;
  if (has("encoder.weight") && has("decoder.weight")) {
    if (has("bias") && !has("b_dec")) {
      throw new MonobenchError(
        `${path}: a dictionary_learning AutoEncoder (ReLU + L1) state dict (keys: ${list}); only BatchTopKSAE and ` +
          "MatroyshkaBatchTopKSAE checkpoints are supported",
      );
    }
    cls = "BatchTopKSAE";
  } else if (has("W_enc") && has("W_dec")) cls = "MatroyshkaBatchTopKSAE";
  if (!cls) {
    throw new MonobenchError(
      `${path}: not a dictionary_learning BatchTopKSAE / MatroyshkaBatchTopKSAE state dict (keys: ${list})`,
      "expected the ae.pt / checkpoints/ae_<step>.pt files that dictionary_learning's trainSAE writes",
    );
  }
  const want = KEYS[cls];
  const missing = want.filter((k) => !has(k)), extra = keys.filter((k) => !want.includes(k));
  if (missing.includes("threshold") || missing.includes("k")) {
    throw new MonobenchError(
      `${path}: ${cls} state dict without ${
        missing.filter((k) => k === "threshold" || k === "k").join(" and ")
      }`,
      "a BatchTopK SAE is only defined with its inference threshold and k: loading it as a plain ReLU SAE " +
        "would keep every positive pre-activation and change every latent (the SAELens PR #608 bug); " +
        "use the unmodified checkpoint that trainSAE saved",
    );
  }
  if (missing.length || extra.length) {
    throw new MonobenchError(
      `${path}: not a ${cls} state dict: ${missing.length ? `missing ${missing.join(", ")}` : ""}${
        missing.length && extra.length ? "; " : ""
      }${extra.length ? `unexpected ${extra.join(", ")}` : ""}`,
      cls === "MatroyshkaBatchTopKSAE" && missing.includes("group_sizes")
        ? "a MatroyshkaBatchTopKSAE checkpoint records its group_sizes buffer"
        : `${cls} checkpoints hold exactly ${want.join(", ")}`,
    );
  }
  return cls;
}

function shapeIs(t: PtTensor, shape: number[], what: string): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new MonobenchError(
      `${describeTensor(t)}: expected shape [${shape.join(", ")}] (${what})`,
      "the weights do not fit together: is the file corrupt or from another architecture?",
    );
  }
}

async function scalar(t: PtTensor, kind: "int" | "float"): Promise<number> {
  check(t.shape.reduce((a, b) => a * b, 1) === 1, `${describeTensor(t)}: expected a scalar`);
  if (kind === "int") {
    check(t.dtype.startsWith("int"), `${describeTensor(t)}: expected an integer`);
    return (await readPtInts(t))[0];
  }
  return (await readPtFloat(t))[0];
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/** The step of a file named `ae_<step>.pt`, else null. */
export function checkpointStep(file: string): number | null {
  const m = /^ae_(\d+)\.pth?$/.exec(basename(file));
  return m ? Number(m[1]) : null;
}

async function readConfig(path: string): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new MonobenchError(`cannot read ${path}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`${path}: malformed JSON (${(e as Error).message})`);
  }
  const trainer = (obj as Record<string, unknown> | null)?.trainer;
  if (trainer === null || typeof trainer !== "object" || Array.isArray(trainer)) {
    throw new MonobenchError(`${path}: not a dictionary_learning trainer config (no "trainer" object)`);
  }
  return trainer as Record<string, unknown>;
}

/** config.json of the trainer folder a checkpoint file belongs to (`trainer_0/` or `trainer_0/checkpoints/`). */
function configPathFor(file: string): string[] {
  const dir = dirname(file);
  return basename(dir) === "checkpoints" ? [join(dirname(dir), "config.json")] : [join(dir, "config.json")];
}

/** Check the checkpoint against its trainer config (both written by the same run). */
function crossCheck(
  sae: Omit<DictLearnSae, "params" | "notes" | "config" | "configPath">,
  cfg: Record<string, unknown>,
  cfgPath: string,
) {
  const bad = (what: string, got: unknown, want: unknown) => {
    throw new MonobenchError(
      `${sae.file}: ${what} is ${JSON.stringify(want)} but ${cfgPath} says ${JSON.stringify(got)}`,
      "the checkpoint and config.json come from different runs",
    );
  };
  if (cfg.dict_class !== undefined && cfg.dict_class !== sae.dictClass) {
    bad("the class", cfg.dict_class, sae.dictClass);
  }
  if (cfg.activation_dim !== undefined && cfg.activation_dim !== sae.d) {
    bad("activation_dim", cfg.activation_dim, sae.d);
  }
  if (cfg.dict_size !== undefined && cfg.dict_size !== sae.width) bad("dict_size", cfg.dict_size, sae.width);
  if (cfg.k !== undefined && cfg.k !== sae.k) bad("k", cfg.k, sae.k);
  if (
    sae.groupSizes && Array.isArray(cfg.group_sizes) &&
    JSON.stringify(cfg.group_sizes) !== JSON.stringify(sae.groupSizes)
  ) bad("group_sizes", cfg.group_sizes, sae.groupSizes);
}

/**
 * Load one dictionary_learning state-dict file. The trainer config.json next to it (if any) is
 * read and cross-checked; pass `configPath: null` to skip it.
 */
export async function loadDictLearningFile(
  file: string,
  opts: { configPath?: string | null } = {},
): Promise<DictLearnSae> {
  const pt = await openPt(file);
  const { tensors, other } = ptEntries(pt);
  if (other.size || tensors.has("")) {
    const what = tensors.has("") ? "a single tensor" : `non-tensor entries (${[...other.keys()].join(", ")})`;
    throw new MonobenchError(`${file}: expected a state dict of tensors, found ${what}`);
  }
  const cls = classify(file, [...tensors.keys()]);
  const T = (k: string) => tensors.get(k)!;
  const k = await scalar(T("k"), "int");
  const threshold = await scalar(T("threshold"), "float");
  let d: number, width: number, Wenc: Float32Array, benc: Float32Array, Wdec: Float32Array;
  let groupSizes: number[] | null = null;
  if (cls === "BatchTopKSAE") {
    [width, d] = T("encoder.weight").shape.length === 2 ? T("encoder.weight").shape : [0, 0];
    check(
      width > 0 && d > 0,
      `${describeTensor(T("encoder.weight"))}: expected a 2-D [dict_size, activation_dim] weight`,
    );
    shapeIs(T("decoder.weight"), [d, width], "decoder.weight is [activation_dim, dict_size]");
    shapeIs(T("encoder.bias"), [width], "encoder.bias is [dict_size]");
    shapeIs(T("b_dec"), [d], "b_dec is [activation_dim]");
    Wenc = await readPtFloat(T("encoder.weight"));
    benc = await readPtFloat(T("encoder.bias"));
    Wdec = transpose(await readPtFloat(T("decoder.weight")), d, width);
  } else {
    [d, width] = T("W_enc").shape.length === 2 ? T("W_enc").shape : [0, 0];
    check(
      width > 0 && d > 0,
      `${describeTensor(T("W_enc"))}: expected a 2-D [activation_dim, dict_size] weight`,
    );
    shapeIs(T("W_dec"), [width, d], "W_dec is [dict_size, activation_dim]");
    shapeIs(T("b_enc"), [width], "b_enc is [dict_size]");
    shapeIs(T("b_dec"), [d], "b_dec is [activation_dim]");
    check(T("group_sizes").shape.length === 1, `${describeTensor(T("group_sizes"))}: expected a 1-D tensor`);
    groupSizes = await readPtInts(T("group_sizes"));
    check(
      groupSizes.length >= 1 && groupSizes.every((s) => s > 0) &&
        groupSizes.reduce((a, b) => a + b, 0) === width,
      `${file}: group_sizes ${JSON.stringify(groupSizes)} must be positive and sum to dict_size ${width}`,
    );
    Wenc = transpose(await readPtFloat(T("W_enc")), d, width);
    benc = await readPtFloat(T("b_enc"));
    Wdec = await readPtFloat(T("W_dec"));
  }
  const bdec = await readPtFloat(T("b_dec"));
  check(
    Number.isSafeInteger(k) && k >= 1 && k <= width,
    `${file}: k = ${k} must be an integer in [1, dict_size = ${width}]`,
  );

  const step = checkpointStep(file);
  const base = { file, dictClass: cls, variant: VARIANT[cls], d, width, k, threshold, groupSizes, step };
  let config: Record<string, unknown> | null = null, configPath: string | null = null;
  const candidates = opts.configPath === null
    ? []
    : opts.configPath
    ? [opts.configPath]
    : configPathFor(file);
  for (const c of candidates) {
    config = await readConfig(c);
    if (config) {
      configPath = c;
      crossCheck(base, config, c);
      break;
    }
    if (opts.configPath) throw new MonobenchError(`missing file ${c}`);
  }

  const variant = getSae(VARIANT[cls]);
  const num = (key: string) => typeof config?.[key] === "number" ? config[key] as number : undefined;
  let cfg;
  try {
    cfg = resolveSaeConfig(variant, {
      variant: variant.name,
      d,
      width,
      k,
      ...(groupSizes ? { groupFractions: fractionsFor(groupSizes, width) } : {}),
      ...(num("auxk_alpha") !== undefined ? { auxkAlpha: num("auxk_alpha") } : {}),
      ...(num("threshold_beta") !== undefined ? { thresholdBeta: num("threshold_beta") } : {}),
      ...(num("threshold_start_step") !== undefined
        ? { thresholdStartStep: num("threshold_start_step") }
        : {}),
    });
  } catch (e) {
    if (e instanceof MonobenchError) throw new MonobenchError(`${file}: ${e.message}`, e.hint);
    throw e;
  }
  if (groupSizes) {
    const got = groupBounds(cfg.groupFractions, width);
    let acc = 0;
    check(
      got.every((b, i) => b === (acc += groupSizes![i])),
      `internal: group sizes ${groupSizes} not reproduced (${got})`,
    );
  }
  const notes = [`dictionary_learning ${cls}: encode f·(f > threshold) with its scalar threshold buffer`];
  if (threshold < 0) {
    notes.push(
      "threshold < 0: never updated (saved before threshold_start_step), so the encode is a plain ReLU",
    );
  }
  notes.push(
    "norm factor not recorded by dictionary_learning; the saved biases and threshold are already in raw units",
  );
  return {
    ...base,
    config,
    configPath,
    params: { cfg, Wenc, benc, Wdec, bdec, threshold, normFactor: 1 },
    notes,
  };
}

/** Which file `--sae DIR --step S` means in a trainer folder; lists what exists when it is absent. */
export async function trainerCheckpoint(dir: string, step: number | "final" = 100_000): Promise<string> {
  const final = join(dir, "ae.pt");
  const steps: number[] = [];
  if (await Deno.stat(join(dir, "checkpoints")).then((s) => s.isDirectory, () => false)) {
    for (const e of await listDir(join(dir, "checkpoints"))) {
      const s = e.isFile ? checkpointStep(e.name) : null;
      if (s !== null) steps.push(s);
    }
  }
  steps.sort((a, b) => a - b);
  const hasFinal = await Deno.stat(final).then((s) => s.isFile, () => false);
  if (step === "final" && hasFinal) return final;
  if (step !== "final" && steps.includes(step)) {
    const pt = join(dir, "checkpoints", `ae_${step}.pt`);
    return await Deno.stat(pt).then(() => pt, () => join(dir, "checkpoints", `ae_${step}.pth`));
  }
  const have = [...(hasFinal ? ["ae.pt (final)"] : []), ...steps.map((s) => `checkpoints/ae_${s}.pt`)];
  throw new MonobenchError(
    `${dir}: no ${step === "final" ? "ae.pt" : `checkpoints/ae_${step}.pt`}` +
      (have.length ? `; it has ${have.join(", ")}` : "; it holds no dictionary_learning checkpoint"),
    have.length
      ? "choose one with --step N (checkpoints/ae_N.pt) or --step final (ae.pt); the paper's is step 100000"
      : "expected a trainer_0 folder as sae_train.py writes it (config.json, ae.pt, checkpoints/ae_<step>.pt)",
  );
}

/** Whether `path` is a dictionary_learning checkpoint file or trainer folder (not a cfg.json checkpoint). */
export async function isDictLearningPath(path: string): Promise<boolean> {
  const st = await Deno.stat(path).catch(() => null);
  if (!st) return false;
  if (st.isFile) return /\.pth?$/i.test(path);
  const has = (p: string) => Deno.stat(join(path, p)).then(() => true, () => false);
  if (await has("cfg.json")) return false;
  return (await has("ae.pt")) || (await has("checkpoints")) || (await has("config.json"));
}

/** Load `path`: an ae.pt-style file, or a trainer folder (see {@link trainerCheckpoint}). */
export async function loadDictLearningSae(
  path: string,
  opts: { step?: number | "final" } = {},
): Promise<DictLearnSae> {
  const st = await Deno.stat(path).catch(() => null);
  if (!st) throw new MonobenchError(`SAE checkpoint not found: ${path}`);
  if (st.isFile) {
    check(
      opts.step === undefined,
      "--step picks a checkpoint inside a trainer folder; give the folder, not a file",
    );
    return await loadDictLearningFile(path);
  }
  return await loadDictLearningFile(await trainerCheckpoint(path, opts.step));
}
