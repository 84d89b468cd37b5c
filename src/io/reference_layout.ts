/**
 * Walk a checkpoints folder laid out as the reference's sae_train.py writes it (and as the
 * authors' released weights unpack):
 *
 * ```
 * <root>/<sae>_<k>_x<ε>/<acts>_<sae>_<k>_x<ε>/trainer_0/config.json
 *                                                      /ae.pt                    final model
 *                                                      /checkpoints/ae_<step>.pt (0, 20000, …, 100000)
 * ```
 *
 * `<sae>` is `batch_top_k` or `matroyshka_batch_top_k` (spelled so), `<acts>` the name of the
 * training activations folder, `{dataset}_{split}_activations_{model}_{layer}_{point}` for
 * save_activations.py output (layer −1 is the final projection, "last" in the paper). Every SAE
 * found is loaded (./dictlearn.ts) and checked against its folder names. Directories that do not
 * look like `<sae>_<k>_x<ε>` (and files, dot-folders) are skipped and reported; anything inside
 * an SAE folder that is missing, ambiguous or corrupt throws a MonobenchError naming it.
 */
import { join } from "node:path";
import { check, MonobenchError } from "../util/errors.ts";
import { listDir } from "./fsutil.ts";
import { type DictLearnSae, loadDictLearningFile, SAE_MODEL_NAMES, trainerCheckpoint } from "./dictlearn.ts";

/** One SAE of a reference-layout folder. */
export interface ReferenceSae {
  /** `<root>/<sae>_<k>_x<ε>/<acts>_<sae>_<k>_x<ε>/trainer_0`. */
  trainerDir: string;
  /** The reference's --sae_model name. */
  saeModel: "batch_top_k" | "matroyshka_batch_top_k";
  variant: "batchtopk" | "matryoshka";
  k: number;
  expansion: number;
  /** `ae_<step>.pt` step, or "final" for ae.pt. */
  step: number | "final";
  /** Name of the training activations folder. */
  acts: string;
  /** Layer name: "last" for the reference's layer −1, the layer number otherwise, or `acts` itself. */
  sourceLayer: string;
  /** Parsed from `acts` when it follows save_activations.py's naming (else null). */
  model: string | null;
  dataset: string | null;
  attachmentPoint: string | null;
  /** The loaded checkpoint (params, d, width, threshold, group sizes, trainer config). */
  sae: DictLearnSae;
}

export interface WalkResult {
  saes: ReferenceSae[];
  /** Entries of the root that are not SAE folders (e.g. README.md of a weights download). */
  skipped: string[];
}

const OUTER = /^(batch_top_k|matroyshka_batch_top_k)_(\d+)_x(\d+)$/;
const ACTS = /^(.+?)_(train|val)_activations_(.+)_(-?\d+)_([A-Za-z]+(?:_[A-Za-z]+)*)$/;

/** Parse a save_activations.py folder name (`imagenet_train_activations_<model>_<layer>_<point>`). */
export function parseActsName(acts: string): {
  sourceLayer: string;
  model: string | null;
  dataset: string | null;
  attachmentPoint: string | null;
} {
  const m = ACTS.exec(acts);
  if (!m) return { sourceLayer: acts, model: null, dataset: null, attachmentPoint: null };
  const layer = Number(m[4]);
  return {
    sourceLayer: layer === -1 ? "last" : String(layer),
    model: m[3],
    dataset: m[1],
    attachmentPoint: m[5],
  };
}

/**
 * Find and load every SAE under `root` (a checkpoints folder, or one `<sae>_<k>_x<ε>` folder).
 * `step` picks `checkpoints/ae_<step>.pt` (default 100000, what the paper's scripts load) or
 * "final" for `ae.pt`.
 */
export async function walkReferenceLayout(
  root: string,
  opts: { step?: number | "final" } = {},
): Promise<WalkResult> {
  const step = opts.step ?? 100_000;
  check(
    step === "final" || (Number.isSafeInteger(step) && step >= 0),
    `step must be a non-negative integer or "final", got ${step}`,
  );
  const rootName = root.replace(/\/+$/, "").split("/").pop() ?? "";
  const outers: { dir: string; name: string }[] = [];
  const skipped: string[] = [];
  if (OUTER.test(rootName)) outers.push({ dir: root, name: rootName });
  else {
    for (const e of await listDir(root)) {
      if (e.isDirectory && OUTER.test(e.name)) outers.push({ dir: join(root, e.name), name: e.name });
      else if (!e.name.startsWith(".")) skipped.push(e.name);
    }
  }
  if (outers.length === 0) {
    throw new MonobenchError(
      `${root}: no SAE folders (<sae>_<k>_x<ε>, e.g. matroyshka_batch_top_k_20_x4) found`,
      "give the checkpoints folder that sae_train.py writes (or the authors' released weights)",
    );
  }
  const saes: ReferenceSae[] = [];
  for (const o of outers) {
    const [, saeModel, kText, epsText] = OUTER.exec(o.name)!;
    const suffix = `_${saeModel}_${kText}_x${epsText}`;
    const runs = (await listDir(o.dir)).filter((e) => e.isDirectory && !e.name.startsWith("."));
    if (runs.length === 0) {
      throw new MonobenchError(`${o.dir}: empty SAE folder (no <acts>${suffix} run inside)`);
    }
    for (const r of runs) {
      const runDir = join(o.dir, r.name);
      if (!r.name.endsWith(suffix) || r.name.length === suffix.length) {
        throw new MonobenchError(
          `${runDir}: expected a folder named <activations>${suffix} inside ${o.name}`,
          "the reference names each run <activations folder>_<sae>_<k>_x<ε>; is it in the wrong SAE folder?",
        );
      }
      const acts = r.name.slice(0, -suffix.length);
      const trainers = (await listDir(runDir)).filter((e) => e.isDirectory && /^trainer_\d+$/.test(e.name));
      if (trainers.length === 0) throw new MonobenchError(`${runDir}: no trainer_0 folder`);
      if (trainers.length > 1) {
        throw new MonobenchError(
          `${runDir}: ${trainers.map((t) => t.name).join(", ")}: several trainers in one run are ambiguous`,
          "the reference trains one SAE per run (trainer_0); move the others into their own folders",
        );
      }
      const trainerDir = join(runDir, trainers[0].name);
      const file = await trainerCheckpoint(trainerDir, step);
      let sae: DictLearnSae;
      try {
        sae = await loadDictLearningFile(file);
      } catch (e) {
        if (e instanceof MonobenchError && !e.message.includes(file)) {
          throw new MonobenchError(`${file}: ${e.message}`, e.hint);
        }
        throw e;
      }
      const want = SAE_MODEL_NAMES[saeModel];
      const k = Number(kText), expansion = Number(epsText);
      const mismatch = (what: string, name: unknown, got: unknown) => {
        throw new MonobenchError(
          `${file}: the folder name says ${what} ${name} but the checkpoint has ${got}`,
          "the folder was renamed or the file copied into the wrong folder",
        );
      };
      if (sae.dictClass !== want) mismatch("class", want, sae.dictClass);
      if (sae.k !== k) mismatch("k =", k, sae.k);
      if (sae.width !== expansion * sae.d) {
        mismatch(`expansion ×${expansion} of d = ${sae.d}, i.e. width`, expansion * sae.d, sae.width);
      }
      saes.push({
        trainerDir,
        saeModel: saeModel as ReferenceSae["saeModel"],
        variant: sae.variant,
        k,
        expansion,
        step: step === "final" ? "final" : step,
        acts,
        ...parseActsName(acts),
        sae,
      });
    }
  }
  return { saes, skipped };
}
