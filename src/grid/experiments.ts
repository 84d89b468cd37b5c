/**
 * Paper experiments as data: each experiment is one JSON file in `experiments/` (format:
 * schema/experiment.schema.json, documented in experiments/README.md) that declares its grid
 * (layers × SAE types × ε × K), the paper models and similarity encoders it is about, the fixture
 * tables its numbers are compared with, the case subsets of the size presets, and how its layers
 * read the embedded default. `--experiment NAME|FILE` picks one or more; without it a run takes
 * {@link DEFAULT_EXPERIMENT_NAMES}, the CLIP ViT-L main grid and the K ablation — the grid
 * `reproduce` has always run.
 *
 * A run resolves its experiments once, into the frozen config (src/run/config.ts), which hashes
 * them unless they are the default ones (so that run directories and the stored baseline made
 * before experiments were files stay valid).
 */
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import clipMainJson from "../../experiments/clip-vitl-main.json" with { type: "json" };
import kAblationJson from "../../experiments/k-ablation.json" with { type: "json" };
import experimentSchema from "../../schema/experiment.schema.json" with { type: "json" };
import { stableStringify } from "../data/hash.ts";
import type { DiffOptions } from "../report/diff.ts";
import type { FixtureRow } from "../report/fixtures.ts";
import { LAYER_NAME_PATTERN, PAPER_LAYERS } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { assertValid, type JsonSchema, SchemaRegistry } from "../util/schema.ts";
import { applyGridFilter, type BenchCase, experimentCases, parseGridFilter } from "./cases.ts";

/** Size presets an experiment may restrict (the paper preset always runs every case). */
export const EXPERIMENT_PRESETS = ["smoke", "default"] as const;

/** A validated experiment declaration (optional fields absent when the file leaves them out). */
export interface Experiment {
  name: string;
  title: string;
  ref?: string;
  /** Case group of its cases (`--grid group=`); the name unless the file says otherwise. */
  group: string;
  /** Paper models (fixtures' `model` column); the first unless the data names another. */
  models: string[];
  /** Layer names as the data calls them, shallowest first; "last" is the final projection. */
  layers: string[];
  expansions: number[];
  saes: string[];
  k: number[];
  /** Paper MS encoders E of the compared numbers; our primary source stands for the first. */
  similarity: string[];
  /** Fixture tables compared with. */
  tables: string[];
  /** Grid filter (`--grid` syntax) per size preset; a preset not listed runs every case. */
  presets: Partial<Record<(typeof EXPERIMENT_PRESETS)[number], string>>;
  /** Experiment layer → embedded-default layer it reads (a layer not listed reads its own name). */
  embedded: Record<string, string>;
  note?: string;
}

/** The repository's experiment folder. */
export const EXPERIMENTS_DIR: string = fileURLToPath(new URL("../../experiments/", import.meta.url)).replace(
  /\/$/,
  "",
);

/** What a run without `--experiment` runs. */
export const DEFAULT_EXPERIMENT_NAMES: readonly string[] = ["clip-vitl-main", "k-ablation"];

const SCHEMA_ID = "experiment.schema.json";
const REGISTRY = new SchemaRegistry().add(experimentSchema as JsonSchema);
const NAME_RE = /^[a-z0-9][a-z0-9_.-]*$/;

function dupes<T>(a: readonly T[]): T[] {
  return [...new Set(a.filter((x, i) => a.indexOf(x) !== i))];
}

/**
 * Validate an experiment declaration (parsed JSON). `what` names it in messages; `fileStem`, for
 * a file of experiments/, must equal its name.
 */
export function parseExperiment(raw: unknown, what: string, fileStem?: string): Experiment {
  assertValid(REGISTRY, SCHEMA_ID, raw, what);
  const r = raw as Omit<Experiment, "group" | "presets" | "embedded"> & {
    group?: string;
    presets?: Experiment["presets"];
    embedded?: Record<string, string>;
  };
  if (fileStem !== undefined) {
    check(
      r.name === fileStem,
      `${what}: "name" is "${r.name}" but the file is ${fileStem}.json`,
      "a file in experiments/ is named after its experiment",
    );
  }
  for (const key of ["models", "layers", "expansions", "saes", "k", "similarity", "tables"] as const) {
    const d = dupes(r[key] as readonly unknown[]);
    check(d.length === 0, `${what}: "${key}" lists ${d.map((x) => JSON.stringify(x)).join(", ")} twice`);
  }
  for (const l of Object.keys(r.embedded ?? {})) {
    check(
      r.layers.includes(l),
      `${what}: "embedded" maps layer "${l}", which is not one of its layers (${r.layers.join(", ")})`,
    );
  }
  const e: Experiment = {
    name: r.name,
    title: r.title,
    ...(r.ref !== undefined ? { ref: r.ref } : {}),
    group: r.group ?? r.name,
    models: [...r.models],
    layers: [...r.layers],
    expansions: [...r.expansions],
    saes: [...r.saes],
    k: [...r.k],
    similarity: [...r.similarity],
    tables: [...r.tables],
    presets: { ...(r.presets ?? {}) },
    embedded: { ...(r.embedded ?? {}) },
    ...(r.note !== undefined ? { note: r.note } : {}),
  };
  const all = experimentCases(e);
  for (const p of EXPERIMENT_PRESETS) {
    const expr = e.presets[p];
    if (expr === undefined) continue;
    try {
      const f = parseGridFilter(expr, all);
      check(f.from === undefined, `from= is not allowed here`);
      applyGridFilter(all, f, `experiment ${e.name}`);
    } catch (err) {
      if (!(err instanceof MonobenchError)) throw err;
      throw new MonobenchError(`${what}: presets.${p} "${expr}": ${err.message}`);
    }
  }
  return e;
}

function readExperimentFile(file: string, fileStem?: string): Experiment {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (e) {
    throw new MonobenchError(`cannot read experiment file ${file}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`experiment file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  return parseExperiment(obj, `experiment file ${file}`, fileStem);
}

/** Names of the experiments in experiments/ (sorted). */
export function listExperimentNames(dir: string = EXPERIMENTS_DIR): string[] {
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile && e.name.endsWith(".json")) names.push(e.name.slice(0, -5));
    }
  } catch {
    // no experiments folder: no named experiments
  }
  return names.sort();
}

/**
 * One experiment by name (`experiments/<name>.json`) or by file path (anything with a slash or
 * ending in .json; relative paths against `base`).
 */
export function loadExperiment(ref: string, base: string = Deno.cwd()): Experiment {
  const isPath = ref.includes("/") || ref.endsWith(".json");
  if (!isPath) {
    const known = listExperimentNames();
    if (!NAME_RE.test(ref) || !known.includes(ref)) {
      throw new MonobenchError(
        `unknown experiment "${ref}"; experiments/ has: ${known.join(", ") || "none"}`,
        "add the file experiments/<name>.json (see experiments/README.md), or pass a file path",
      );
    }
    return readExperimentFile(join(EXPERIMENTS_DIR, `${ref}.json`), ref);
  }
  const file = isAbsolute(ref) ? ref : resolve(base, ref);
  const inDir = dirname(file) === EXPERIMENTS_DIR;
  return readExperimentFile(file, inDir ? basename(file, ".json") : undefined);
}

let defaults: readonly Experiment[] | null = null;

/** The default experiments (frozen; read once from the files bundled with the code). */
export function defaultExperiments(): readonly Experiment[] {
  return defaults ??= Object.freeze([
    parseExperiment(clipMainJson, "experiments/clip-vitl-main.json", "clip-vitl-main"),
    parseExperiment(kAblationJson, "experiments/k-ablation.json", "k-ablation"),
  ].map((e) => Object.freeze(e)));
}

/**
 * A config value (`--experiment`, a config file's "experiment") → the experiments: names or
 * paths (a string, comma-separated, or a list), or declarations themselves (as run.json stores
 * them). Names must be unique and the experiments must share a paper model.
 */
export function resolveExperiments(v: unknown, base: string, where: string): Experiment[] {
  const items: unknown[] = typeof v === "string"
    ? v.split(",").map((s) => s.trim()).filter((s) => s !== "")
    : Array.isArray(v)
    ? v.flatMap((x) => (typeof x === "string" ? x.split(",").map((s) => s.trim()).filter(Boolean) : [x]))
    : [];
  if (items.length === 0) {
    throw new MonobenchError(
      `${where} must name at least one experiment, got ${JSON.stringify(v)}`,
      `known experiments: ${listExperimentNames().join(", ")}`,
    );
  }
  const list = items.map((x, i) => {
    if (typeof x === "string") return loadExperiment(x, base);
    if (x !== null && typeof x === "object") return parseExperiment(x, `${where}[${i}]`);
    throw new MonobenchError(`${where}[${i}] must be an experiment name, a file path or a declaration`);
  });
  const d = dupes(list.map((e) => e.name));
  check(d.length === 0, `${where}: experiment ${d.join(", ")} is given twice`);
  commonModels(list);
  return list;
}

/** Paper models every experiment of the list compares with, in the first one's order. */
function commonModels(list: readonly Experiment[]): string[] {
  const common = list[0].models.filter((m) => list.every((e) => e.models.includes(m)));
  if (common.length === 0) {
    throw new MonobenchError(
      `experiments ${list.map((e) => `${e.name} (${e.models.join(", ")})`).join(" and ")} compare ` +
        "different models, and one run holds activations of one model",
      "run them one at a time (deno task reproduce --experiment NAME)",
    );
  }
  return common;
}

/** Whether a list is the default experiments (by content). */
export function isDefaultExperiments(list: readonly Experiment[]): boolean {
  return stableStringify(list) === stableStringify(defaultExperiments());
}

/** What the config hash covers of the experiments: nothing for the default ones, else every declaration. */
export function experimentHashPart(list: readonly Experiment[] | undefined): Experiment[] | undefined {
  if (list === undefined || isDefaultExperiments(list)) return undefined;
  return list.map((e) => JSON.parse(stableStringify(e)));
}

/** Names of the experiments, comma-separated (for messages). */
export function experimentNames(list: readonly Experiment[] | undefined): string {
  return (list ?? defaultExperiments()).map((e) => e.name).join(",");
}

/**
 * The paper model a run is compared with: the one its data names (a manifest's "model"), which
 * every experiment must list, or else the first model they share.
 */
export function runModel(
  list: readonly Experiment[],
  dataModel: string | null,
  dataWhat = "the data",
): string {
  if (dataModel === null) return commonModels(list)[0];
  for (const e of list) {
    if (!e.models.includes(dataModel)) {
      throw new MonobenchError(
        `${dataWhat} holds activations of ${dataModel}, but experiment ${e.name} compares with ${
          e.models.join(", ")
        }`,
        `run the experiment of that model (experiments/: ${
          listExperimentNames().join(", ")
        }), or correct the ` +
          `manifest's "model"`,
      );
    }
  }
  return dataModel;
}

/** Diff options of a run: its model's rows of the experiments' tables and similarity encoders. */
export function experimentDiffOptions(
  list: readonly Experiment[],
  model: string,
): Required<Pick<DiffOptions, "model" | "tables" | "encoders" | "primaryEncoder">> {
  return {
    model,
    tables: [...new Set(list.flatMap((e) => e.tables))],
    encoders: [...new Set(list.flatMap((e) => e.similarity))],
    primaryEncoder: list[0].similarity[0],
  };
}

/** Refuse experiments whose tables the fixtures lack, or that have no row of the run's model. */
export function checkExperimentTables(
  list: readonly Experiment[],
  fixtures: readonly FixtureRow[],
  model: string,
): void {
  const tables = new Set(fixtures.map((f) => f.table));
  for (const e of list) {
    for (const t of e.tables) {
      check(
        tables.has(t),
        `experiment ${e.name} compares with "${t}", which fixtures/paper does not have`,
        `tables: ${[...tables].sort().join(", ")}`,
      );
      check(
        fixtures.some((f) => f.table === t && f.model === model),
        `experiment ${e.name} compares ${model} with ${t}, which has no row of that model`,
        `models in ${t}: ${
          [...new Set(fixtures.filter((f) => f.table === t).map((f) => f.model))].join(", ")
        }`,
      );
    }
  }
}

/**
 * Refuse a selection whose layers the data lacks (before any work), naming the experiment that
 * needs the layer; `have` lists the data's layer names.
 */
export function checkExperimentLayers(
  list: readonly Experiment[],
  cases: readonly BenchCase[],
  have: readonly string[],
  dataWhat: string,
): void {
  const need = [...new Set(cases.map((c) => c.layer))];
  const missing = need.filter((l) => !have.includes(l));
  if (missing.length === 0) return;
  const by = list.filter((e) => e.layers.includes(missing[0])).map((e) => e.name);
  const present = need.filter((l) => have.includes(l));
  throw new MonobenchError(
    `experiment ${by.join(", ") || experimentNames(list)} needs layer${missing.length > 1 ? "s" : ""} ${
      missing.join(", ")
    }, but ${dataWhat} has only ${have.join(", ")}`,
    present.length
      ? `add the layer to the manifest (deno task import --manifest … --layer NAME:train=…,eval=…), or run the ` +
        `others: --grid "layers=${present.join(",")}"`
      : "add the layers to the manifest (deno task import --manifest … --layer NAME:train=…,eval=…)",
  );
}

/** The embedded-default layer an experiment layer reads (validated: a name the embedded default has). */
export function embeddedLayerOf(e: Experiment, layer: string): string | null {
  const to = e.embedded[layer] ?? layer;
  return (PAPER_LAYERS as readonly string[]).includes(to) ? to : null;
}

/** Validate a layer name (a manifest's, an import's). */
export function checkLayerName(name: unknown, what: string): asserts name is string {
  check(
    typeof name === "string" && LAYER_NAME_PATTERN.test(name),
    `${what}: layer name ${
      JSON.stringify(name)
    } must be letters, digits, "_" or "." (e.g. 11, last, block_7)`,
    '"last" means the final projection; the name is part of case ids and file names',
  );
}
