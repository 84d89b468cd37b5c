/**
 * The run config: one object, resolved once from four layers, validated once, frozen, serialised
 * canonically and hashed. Every component of a run reads it; the trainer's own input is derived
 * from it per case ({@link trainInput}).
 *
 * Precedence, lowest first (a field takes the value of the highest layer that sets it):
 *   1. built-in defaults
 *   2. the preset (`--preset`, else the config file's "preset", else "default"): training steps,
 *      batch size, lr rule, seed count, embedded data sizes
 *   3. the config file (`--config FILE`, JSON, same keys as the resolved config; relative paths
 *      against the file's directory)
 *   4. command-line flags (relative paths against the directory the command was run from)
 * The training schedule (warmup, threshold start and EMA window, dead-latent window, checkpoint
 * interval) is derived from the final steps and batch size ({@link scaledHyper}) unless the config
 * file sets it explicitly.
 *
 * The config hash covers the result-relevant part only — the training settings and which data is
 * read (the embedded sizes; for a manifest, the store content hashes are in the provenance
 * instead of its path). The grid, extra SAEs, seed list, paths and report options may change
 * between invocations of one run directory: results are kept per case and seed.
 */
import { dirname, relative } from "node:path";
import { BACKEND_NAMES, type BackendName } from "../backend/select.ts";
import { type LrRule, PRESET_NAMES, type PresetName, scaledHyper } from "../grid/cases.ts";
import { getPreset } from "../grid/cases.ts";
import { sha256Hex, stableStringify } from "../data/hash.ts";
import {
  DEFAULT_EXPERIMENT_NAMES,
  type Experiment,
  experimentHashPart,
  experimentNames,
  resolveExperiments,
} from "../grid/experiments.ts";
import type { TrainInput } from "../train/config.ts";
import { MonobenchError } from "../util/errors.ts";
import { callerCwd, isWithin, REPO_ROOT, userPath } from "../util/paths.ts";

/** Training settings of every case of the run. */
export interface RunTrain {
  steps: number;
  batchSize: number;
  /** "code" | "paper" formula, or a fixed base learning rate. */
  lr: LrRule | number;
  warmupSteps: number;
  thresholdStartStep: number;
  thresholdBeta: number;
  deadAfterTokens: number;
  auxkAlpha: number;
  checkpointEvery: number;
}

export interface RunDataSpec {
  /** "embedded", or the absolute path of a data manifest. */
  source: string;
  /** Embedded data sizes (null: the embedded default's choice). */
  nTrain: number | null;
  nEval: number | null;
}

/** A run that measures existing reference-layout checkpoints instead of training (measure-reference). */
export interface ReferenceSpec {
  /** Absolute path of the folder laid out as the reference's sae_train.py writes it. */
  saeRoot: string;
  /** `checkpoints/ae_<step>.pt`, or "final" for ae.pt. */
  step: number | "final";
}

/** The resolved, frozen run config. */
export interface MonobenchConfig {
  preset: PresetName;
  /** The experiments whose grids the preset sizes (src/grid/experiments.ts), as declared. */
  experiment: Experiment[];
  /** `--grid` filter expression ("" = the whole preset). */
  grid: string;
  /** Extra registered SAE types added to the grid. */
  sae: string[];
  /** Absolute paths of user SAE modules to import. */
  saeModules: string[];
  backend: BackendName;
  train: RunTrain;
  /** Seeds; every case is trained once per seed. */
  seeds: number[];
  data: RunDataSpec;
  cache: string;
  out: string;
  /** Our similarity source standing for the paper's DINOv2 (null: the built-in choice). */
  primary: string | null;
  tolerances: string | null;
  baseline: string | null;
  /** Retrain cases whose stored provenance differs instead of refusing. */
  retrainMismatched: boolean;
  /** Set by `deno task measure-reference` (no training); absent for `reproduce`. */
  reference?: ReferenceSpec;
}

export type ConfigField =
  | "preset"
  | "experiment"
  | "grid"
  | "sae"
  | "saeModules"
  | "backend"
  | `train.${keyof RunTrain}`
  | "seeds"
  | "data.source"
  | "data.nTrain"
  | "data.nEval"
  | "cache"
  | "out"
  | "primary"
  | "tolerances"
  | "baseline"
  | "retrainMismatched";

/** Which layer a field's value came from. */
export type ConfigOrigin = "default" | "preset" | "file" | "cli" | "derived";

export interface ResolvedConfig {
  config: Readonly<MonobenchConfig>;
  /** sha256 of the canonical JSON of the result-relevant part (see the module doc). */
  hash: string;
  origins: Readonly<Record<ConfigField, ConfigOrigin>>;
}

const TRAIN_KEYS: (keyof RunTrain)[] = [
  "steps",
  "batchSize",
  "lr",
  "warmupSteps",
  "thresholdStartStep",
  "thresholdBeta",
  "deadAfterTokens",
  "auxkAlpha",
  "checkpointEvery",
];
/** Fields derived from steps and batch size unless set explicitly. */
const DERIVED:
  ("warmupSteps" | "thresholdStartStep" | "thresholdBeta" | "deadAfterTokens" | "checkpointEvery")[] = [
    "warmupSteps",
    "thresholdStartStep",
    "thresholdBeta",
    "deadAfterTokens",
    "checkpointEvery",
  ];

export const CONFIG_FIELDS: readonly ConfigField[] = [
  "preset",
  "experiment",
  "grid",
  "sae",
  "saeModules",
  "backend",
  ...TRAIN_KEYS.map((k) => `train.${k}` as ConfigField),
  "seeds",
  "data.source",
  "data.nTrain",
  "data.nEval",
  "cache",
  "out",
  "primary",
  "tolerances",
  "baseline",
  "retrainMismatched",
];

/** The command-line flag of a field, where there is one. */
export const FIELD_FLAGS: Partial<Record<ConfigField, string>> = {
  preset: "--preset",
  experiment: "--experiment",
  grid: "--grid",
  sae: "--sae",
  saeModules: "--sae-module",
  backend: "--backend",
  "train.steps": "--steps",
  "train.batchSize": "--batch",
  "train.lr": "--lr",
  seeds: "--seeds",
  "data.source": "--data",
  "data.nTrain": "--n-train",
  "data.nEval": "--n-eval",
  cache: "--cache",
  out: "--out",
  primary: "--primary",
  tolerances: "--tolerances",
  baseline: "--baseline",
  retrainMismatched: "--retrain-mismatched",
};

/** How a field is named to the user: its flag, or its config-file key. */
export function fieldLabel(f: ConfigField): string {
  return FIELD_FLAGS[f] ?? f;
}

/** One layer of values (CLI or file): already typed, paths still as given. */
export type ConfigLayer = Partial<Record<ConfigField, unknown>>;

const MAX_SEED = 2 ** 31 - 1;
const MAX_SEEDS = 1000;

// ---- command line -------------------------------------------------------------------------------

/** The parseArgs options of the config flags (tasks add their own actions). */
export const CONFIG_CLI_OPTIONS = {
  config: { type: "string" },
  preset: { type: "string" },
  experiment: { type: "string", multiple: true },
  grid: { type: "string" },
  sae: { type: "string", multiple: true },
  "sae-module": { type: "string", multiple: true },
  backend: { type: "string" },
  steps: { type: "string" },
  batch: { type: "string" },
  lr: { type: "string" },
  seed: { type: "string" },
  seeds: { type: "string" },
  data: { type: "string" },
  "n-train": { type: "string" },
  "n-eval": { type: "string" },
  cache: { type: "string" },
  out: { type: "string" },
  primary: { type: "string" },
  tolerances: { type: "string" },
  baseline: { type: "string" },
  "retrain-mismatched": { type: "boolean" },
} as const;

export const CONFIG_HELP = `Config (precedence: built-in defaults < preset < --config FILE < flags)
  --config FILE       JSON with any of the keys of the resolved config (see --list), e.g.
                      {"preset": "smoke", "train": {"steps": 100, "warmupSteps": 5}, "seeds": 3}
Grid
  --preset NAME       smoke | default | paper (default: default): the size of the run
  --experiment NAME   the paper experiment(s) whose grid to run: a name of experiments/ or a JSON
                      file (repeatable; default: clip-vitl-main and k-ablation); see
                      experiments/README.md
  --grid EXPR         filter, e.g. "layers=last,22 eps=1,4 sae=matryoshka k=20" (also from=paper)
  --sae NAMES         add registered SAE types (comma-separated) to the grid
  --sae-module FILE   import a TypeScript module that registers user SAE variants (repeatable)
Training
  --backend NAME      ${BACKEND_NAMES.join(" | ")} (default: auto)
  --steps N           override the preset's training steps (warmup etc. rescaled, lr rule kept)
  --batch N           override the preset's batch size
  --lr RULE           code | paper | <number> (default: the preset's rule)
  --seeds N|LIST      train every case N times (seeds 0…N−1) or with the listed seeds ("0,5,9");
                      default: the preset's count (smoke 1, default 3, paper 1)
  --seed N            one seed, N (same as --seeds N,)
Data
  --data SRC          embedded (default) or a data manifest JSON (see README)
  --n-train N, --n-eval N   sizes for the embedded default (default: the preset's)
  --cache DIR         cache for converted models and activation stores (default: .cache in the repo)
Output
  --out DIR           run directory (default: results/<preset>-<timestamp> in the repo); an existing
                      run resumes, reusing every case whose provenance matches
  --retrain-mismatched  retrain cases whose provenance differs (default: refuse, exit 2)
  --primary NAME      our similarity source that stands for the paper's DINOv2 (default inceptionv3)
  --tolerances FILE   JSON with per-metric tolerances for the paper diff
  --baseline FILE     compare with a stored report.json (two-sided); exit 1 on a change
Relative paths are resolved against the directory you run the command from.`;

function cliInt(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isSafeInteger(n) || n < min) {
    throw new MonobenchError(`${flag} must be an integer ≥ ${min}, got "${v}"`);
  }
  return n;
}

/** Parse a `--seeds` value: one number = a count (seeds 0…N−1), a comma list = the seeds. */
export function parseSeeds(v: string, flag = "--seeds"): number[] {
  const t = v.trim();
  if (!t.includes(",")) {
    const n = cliInt(t, flag, 1);
    if (n > MAX_SEEDS) throw new MonobenchError(`${flag} ${n}: at most ${MAX_SEEDS} seeds`);
    return Array.from({ length: n }, (_, i) => i);
  }
  const parts = t.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.length === 0) throw new MonobenchError(`${flag} "${v}" lists no seed`);
  return parts.map((p) => cliInt(p, `${flag} entry`, 0));
}

/** Values of {@link CONFIG_CLI_OPTIONS} (as parseArgs returns them) → a typed layer. */
export function cliLayer(v: Record<string, unknown>): { layer: ConfigLayer; configFile?: string } {
  const s = (k: string) => v[k] as string | undefined;
  const layer: ConfigLayer = {};
  const set = (f: ConfigField, x: unknown) => {
    if (x !== undefined) layer[f] = x;
  };
  set("preset", s("preset"));
  const exp = v.experiment as string[] | undefined;
  if (exp?.length) layer.experiment = exp.flatMap((x) => x.split(",")).map((x) => x.trim()).filter(Boolean);
  set("grid", s("grid"));
  const sae = v.sae as string[] | undefined;
  if (sae?.length) layer.sae = sae.flatMap((x) => x.split(",")).map((x) => x.trim()).filter(Boolean);
  const mods = v["sae-module"] as string[] | undefined;
  if (mods?.length) layer.saeModules = mods;
  set("backend", s("backend"));
  if (s("steps") !== undefined) layer["train.steps"] = cliInt(s("steps")!, "--steps", 1);
  if (s("batch") !== undefined) layer["train.batchSize"] = cliInt(s("batch")!, "--batch", 1);
  const lr = s("lr");
  if (lr !== undefined) {
    if (lr === "code" || lr === "paper") layer["train.lr"] = lr;
    else {
      const n = Number(lr);
      if (lr.trim() === "" || !Number.isFinite(n) || n <= 0) {
        throw new MonobenchError(`--lr must be "code", "paper" or a positive number, got "${lr}"`);
      }
      layer["train.lr"] = n;
    }
  }
  if (s("seed") !== undefined && s("seeds") !== undefined) {
    throw new MonobenchError(
      "--seed and --seeds both given",
      "use one: --seeds 3, --seeds 0,5,9 or --seed 5",
    );
  }
  if (s("seed") !== undefined) layer.seeds = [cliInt(s("seed")!, "--seed", 0)];
  if (s("seeds") !== undefined) layer.seeds = parseSeeds(s("seeds")!);
  set("data.source", s("data"));
  if (s("n-train") !== undefined) layer["data.nTrain"] = cliInt(s("n-train")!, "--n-train", 10);
  if (s("n-eval") !== undefined) layer["data.nEval"] = cliInt(s("n-eval")!, "--n-eval", 10);
  set("cache", s("cache"));
  set("out", s("out"));
  set("primary", s("primary"));
  set("tolerances", s("tolerances"));
  set("baseline", s("baseline"));
  if (v["retrain-mismatched"]) layer.retrainMismatched = true;
  return { layer, configFile: s("config") };
}

// ---- config file --------------------------------------------------------------------------------

const FILE_KEYS = new Set([
  "preset",
  "experiment",
  "grid",
  "sae",
  "saeModules",
  "backend",
  "train",
  "seeds",
  "data",
  "cache",
  "out",
  "primary",
  "tolerances",
  "baseline",
  "retrainMismatched",
]);

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Parse a config file (JSON) into a layer; unknown keys are errors. */
export async function fileLayer(path: string): Promise<ConfigLayer> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new MonobenchError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const what = `config file ${path}`;
  if (!isObj(obj)) throw new MonobenchError(`${what}: expected a JSON object`);
  const layer: ConfigLayer = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === "$schema" || k === "$comment") continue;
    if (!FILE_KEYS.has(k)) {
      throw new MonobenchError(`${what}: unknown key "${k}"`, `known keys: ${[...FILE_KEYS].join(", ")}`);
    }
    if (k === "train") {
      if (!isObj(v)) throw new MonobenchError(`${what}: "train" must be an object`);
      for (const [tk, tv] of Object.entries(v)) {
        if (!(TRAIN_KEYS as string[]).includes(tk)) {
          throw new MonobenchError(`${what}: unknown key "train.${tk}"`, `known: ${TRAIN_KEYS.join(", ")}`);
        }
        layer[`train.${tk}` as ConfigField] = tv;
      }
    } else if (k === "data") {
      if (typeof v === "string") layer["data.source"] = v;
      else if (isObj(v)) {
        for (const [dk, dv] of Object.entries(v)) {
          if (!["source", "nTrain", "nEval"].includes(dk)) {
            throw new MonobenchError(`${what}: unknown key "data.${dk}"`, "known: source, nTrain, nEval");
          }
          layer[`data.${dk}` as ConfigField] = dv;
        }
      } else throw new MonobenchError(`${what}: "data" must be "embedded", a manifest path or an object`);
    } else if (k === "seeds") {
      if (typeof v === "number") {
        if (!Number.isSafeInteger(v) || v < 1 || v > MAX_SEEDS) {
          throw new MonobenchError(`${what}: "seeds" must be a count in 1…${MAX_SEEDS} or a list of seeds`);
        }
        layer.seeds = Array.from({ length: v }, (_, i) => i);
      } else layer.seeds = v;
    } else layer[k as ConfigField] = v;
  }
  return layer;
}

// ---- resolution ---------------------------------------------------------------------------------

type Source = { origin: ConfigOrigin; where: (f: ConfigField) => string; base: string };

function stamp(d: Date): string {
  return d.toISOString().replace(/[:]/g, "").replace(/\..*/, "").replace("T", "-");
}

/** Validate one field's value; returns the normalised value (paths made absolute). */
function validateField(f: ConfigField, v: unknown, src: Source): unknown {
  const where = src.where(f);
  const bad = (what: string, hint?: string): never => {
    throw new MonobenchError(`${where} ${what}, got ${JSON.stringify(v)}`, hint);
  };
  const int = (min: number) => {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) bad(`must be an integer ≥ ${min}`);
    return v;
  };
  const path = (p: unknown, allowEmpty = false): string => {
    if (typeof p !== "string" || (!allowEmpty && p.trim() === "")) bad("must be a non-empty path");
    return userPath(p as string, src.base);
  };
  const optPath = () => (v === null ? null : path(v));
  switch (f) {
    case "preset":
      if (!(PRESET_NAMES as readonly unknown[]).includes(v)) {
        throw new MonobenchError(
          `unknown preset ${JSON.stringify(v)} (${where})`,
          `valid: ${PRESET_NAMES.join(", ")}`,
        );
      }
      return v;
    case "backend":
      if (!(BACKEND_NAMES as readonly unknown[]).includes(v)) {
        throw new MonobenchError(
          `unknown backend ${JSON.stringify(v)} (${where})`,
          `valid: ${BACKEND_NAMES.join(", ")}`,
        );
      }
      return v;
    case "experiment":
      return resolveExperiments(v, src.base, where);
    case "grid":
      if (typeof v !== "string") bad("must be a string");
      return v;
    case "sae":
      if (!Array.isArray(v) || !v.every((x) => typeof x === "string" && /^[\w.-]+$/.test(x))) {
        bad("must be a list of SAE type names");
      }
      return [...(v as string[])];
    case "saeModules":
      if (!Array.isArray(v)) bad("must be a list of module paths");
      return (v as unknown[]).map((p) => path(p));
    case "train.steps":
    case "train.batchSize":
    case "train.deadAfterTokens":
    case "train.checkpointEvery":
      return int(1);
    case "train.warmupSteps":
    case "train.thresholdStartStep":
      return int(0);
    case "train.lr":
      if (v === "code" || v === "paper") return v;
      if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
        bad(`must be "code", "paper" or a positive number`);
      }
      return v;
    case "train.thresholdBeta":
      if (typeof v !== "number" || !(v >= 0 && v < 1)) bad("must be a number in [0, 1)");
      return v;
    case "train.auxkAlpha":
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) bad("must be a number ≥ 0");
      return v;
    case "seeds": {
      if (!Array.isArray(v) || v.length === 0) bad("must be a non-empty list of seeds");
      const list = v as unknown[];
      if (list.length > MAX_SEEDS) bad(`may list at most ${MAX_SEEDS} seeds`);
      for (const x of list) {
        if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0 || x > MAX_SEED) {
          bad(`must list integers in 0…${MAX_SEED}`);
        }
      }
      const dup = list.find((x, i) => list.indexOf(x) !== i);
      if (dup !== undefined) bad(`lists seed ${dup} twice`);
      return [...list];
    }
    case "data.source":
      if (v === "embedded") return v;
      return path(v);
    case "data.nTrain":
    case "data.nEval":
      if (v === null) return null;
      return int(10);
    case "cache":
      return path(v);
    case "out":
      if (typeof v !== "string" || v.trim() === "") {
        throw new MonobenchError(
          `${where} must name a directory, got ${JSON.stringify(v)}`,
          "leave --out out for results/<preset>-<timestamp>, or pass a directory",
        );
      }
      return path(v);
    case "primary":
      if (v === null) return null;
      if (typeof v !== "string" || !/^[\w.-]+$/.test(v)) bad("must be a similarity source name");
      return v;
    case "tolerances":
    case "baseline":
      return optPath();
    case "retrainMismatched":
      if (typeof v !== "boolean") bad("must be true or false");
      return v;
  }
}

function setPath(obj: Record<string, unknown>, f: string, v: unknown): void {
  const [a, b] = f.split(".");
  if (b === undefined) obj[a] = v;
  else {
    obj[a] ??= {};
    (obj[a] as Record<string, unknown>)[b] = v;
  }
}

function getPath(obj: unknown, f: string): unknown {
  let cur = obj;
  for (const p of f.split(".")) cur = (cur as Record<string, unknown> | undefined)?.[p];
  return cur;
}

function deepFreeze<T>(x: T): T {
  if (x && typeof x === "object" && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x)) deepFreeze(v);
  }
  return x;
}

export interface ResolveOptions {
  /** Command-line layer (from {@link cliLayer}). */
  cli?: ConfigLayer;
  /** Config file path (absolute or relative to the caller's cwd). */
  configFile?: string;
  /** Clock for the default run directory name. */
  now?: Date;
  /** Base directory of command-line paths (default: the caller's cwd). */
  cwd?: string;
  /** Make it a run that measures reference-layout checkpoints (`saeRoot` relative to `cwd`). */
  reference?: ReferenceSpec;
}

/** Resolve, validate and freeze the run config (see the module doc for the precedence). */
export async function resolveConfig(opts: ResolveOptions = {}): Promise<ResolvedConfig> {
  const cwd = opts.cwd ?? callerCwd();
  const cli = opts.cli ?? {};
  const filePath = opts.configFile === undefined ? undefined : userPath(opts.configFile, cwd);
  if (opts.configFile !== undefined && opts.configFile.trim() === "") {
    throw new MonobenchError("--config must name a file");
  }
  const file = filePath ? await fileLayer(filePath) : {};

  const cliSrc: Source = { origin: "cli", where: (f) => fieldLabel(f), base: cwd };
  const fileSrc: Source = {
    origin: "file",
    where: (f) => `config file ${filePath}: ${f}`,
    base: filePath ? dirname(filePath) : cwd,
  };
  const presetName = validateField(
    "preset",
    cli.preset ?? file.preset ?? "default",
    cli.preset !== undefined ? cliSrc : fileSrc,
  ) as PresetName;
  const preset = getPreset(presetName);
  const presetSrc: Source = {
    origin: "preset",
    where: (f) => `preset "${presetName}": ${f}`,
    base: REPO_ROOT,
  };
  const defSrc: Source = { origin: "default", where: (f) => `default ${f}`, base: REPO_ROOT };
  const defaults: ConfigLayer = {
    preset: presetName,
    experiment: [...DEFAULT_EXPERIMENT_NAMES],
    grid: "",
    sae: [],
    saeModules: [],
    backend: "auto",
    "train.auxkAlpha": 0.03,
    "data.source": "embedded",
    "data.nTrain": null,
    "data.nEval": null,
    cache: ".cache",
    out: `results/${presetName}-${stamp(opts.now ?? new Date())}`,
    primary: null,
    tolerances: null,
    baseline: null,
    retrainMismatched: false,
  };
  const presetLayer: ConfigLayer = {
    "train.steps": preset.hyper.steps,
    "train.batchSize": preset.hyper.batchSize,
    "train.lr": preset.hyper.lrRule,
    "train.auxkAlpha": preset.hyper.auxkAlpha,
    seeds: Array.from({ length: preset.seeds }, (_, i) => i),
    "data.nTrain": preset.data.nTrain ?? null,
    "data.nEval": preset.data.nEval ?? null,
  };
  const layers: [ConfigLayer, Source][] = [[cli, cliSrc], [file, fileSrc], [presetLayer, presetSrc], [
    defaults,
    defSrc,
  ]];

  const out: Record<string, unknown> = {};
  const origins = {} as Record<ConfigField, ConfigOrigin>;
  const derivedFields = new Set(DERIVED.map((k) => `train.${k}`));
  for (const f of CONFIG_FIELDS) {
    const hit = layers.find(([l]) => l[f] !== undefined);
    if (!hit) {
      if (derivedFields.has(f)) continue;
      throw new MonobenchError(`internal: config field ${f} has no value`);
    }
    setPath(out, f, validateField(f, hit[0][f], hit[1]));
    origins[f] = hit[1].origin;
  }
  const train = out.train as Record<string, unknown>;
  const sched = scaledHyper(train.steps as number, train.batchSize as number);
  for (const k of DERIVED) {
    if (train[k] === undefined) {
      train[k] = sched[k];
      origins[`train.${k}`] = "derived";
    }
  }
  const config = out as unknown as MonobenchConfig;
  if (opts.reference) {
    const step = opts.reference.step;
    if (step !== "final" && !(Number.isSafeInteger(step) && step >= 0)) {
      throw new MonobenchError(
        `--step must be a non-negative integer or "final", got ${JSON.stringify(step)}`,
      );
    }
    config.reference = { saeRoot: userPath(opts.reference.saeRoot, cwd), step };
  }

  // Cross-field checks.
  const t = config.train;
  if (t.warmupSteps > t.steps) {
    throw new MonobenchError(
      `${
        originLabel("train.warmupSteps", origins, filePath)
      } = ${t.warmupSteps} exceeds the ${t.steps} training steps`,
    );
  }
  if (config.data.source !== "embedded") {
    for (const f of ["data.nTrain", "data.nEval"] as const) {
      if (origins[f] === "cli" || origins[f] === "file") {
        throw new MonobenchError(
          `${
            originLabel(f, origins, filePath)
          } applies only to the embedded data, not to the manifest ${config.data.source}`,
          "the stores listed in the manifest decide the sizes",
        );
      }
      setPath(config as unknown as Record<string, unknown>, f, null);
      origins[f] = "default";
    }
  }
  return { config: deepFreeze(config), hash: configHash(config), origins: Object.freeze(origins) };
}

function originLabel(f: ConfigField, origins: Record<ConfigField, ConfigOrigin>, file?: string): string {
  if (origins[f] === "cli") return fieldLabel(f);
  if (origins[f] === "file") return `${f} (config file ${file})`;
  return f;
}

/** The result-relevant part of a config (what {@link configHash} covers). */
export function hashedPart(c: MonobenchConfig): Record<string, unknown> {
  const part: Record<string, unknown> = {
    format: "monobench-config/1",
    train: c.train,
    data: c.data.source === "embedded"
      ? { source: "embedded", nTrain: c.data.nTrain, nEval: c.data.nEval }
      : { source: "manifest" },
  };
  // The default experiments add nothing, so that runs and baselines made before experiments were files stay valid.
  const experiment = experimentHashPart(c.experiment);
  if (experiment) part.experiment = experiment;
  if (c.reference) part.reference = { step: c.reference.step };
  return part;
}

/** sha256 of the canonical JSON (sorted keys) of {@link hashedPart}. */
export function configHash(c: MonobenchConfig): string {
  return sha256Hex(stableStringify(hashedPart(c)));
}

/** Canonical JSON text of a whole config. */
export function configJson(c: MonobenchConfig): string {
  return stableStringify(c);
}

/** A differing result-relevant field between two configs. */
export interface ConfigDifference {
  field: ConfigField | "data.kind" | "reference";
  label: string;
  stored: unknown;
  current: unknown;
}

/** The result-relevant fields that differ between a stored config and the current one. */
export function diffConfigs(stored: MonobenchConfig, current: MonobenchConfig): ConfigDifference[] {
  const a = hashedPart(stored), b = hashedPart(current);
  const diffs: ConfigDifference[] = [];
  for (const k of TRAIN_KEYS) {
    const f = `train.${k}` as ConfigField;
    const x = getPath(a, f), y = getPath(b, f);
    if (stableStringify(x) !== stableStringify(y)) {
      diffs.push({ field: f, label: fieldLabel(f), stored: x, current: y });
    }
  }
  if (stableStringify(a.experiment) !== stableStringify(b.experiment)) {
    const x = experimentNames(stored.experiment), y = experimentNames(current.experiment);
    diffs.push({
      field: "experiment",
      label: "--experiment",
      stored: x === y ? `${x} (another version of it)` : x,
      current: y,
    });
  }
  if (stableStringify(a.reference) !== stableStringify(b.reference)) {
    const kind = (r: unknown) =>
      r ? `measuring reference checkpoints (step ${(r as { step: unknown }).step})` : "training";
    diffs.push({
      field: "reference",
      label: "run kind",
      stored: kind(a.reference),
      current: kind(b.reference),
    });
  }
  const da = a.data as Record<string, unknown>, db = b.data as Record<string, unknown>;
  if (da.source !== db.source) {
    diffs.push({ field: "data.kind", label: "--data", stored: da.source, current: db.source });
  } else {
    for (const f of ["data.nTrain", "data.nEval"] as const) {
      const k = f.slice(5);
      if (da[k] !== db[k]) diffs.push({ field: f, label: fieldLabel(f), stored: da[k], current: db[k] });
    }
  }
  return diffs;
}

/** "--steps 600 there, 300 now" for the first differences (`there` names the stored side). */
export function describeDifferences(diffs: readonly ConfigDifference[], there = "there", max = 3): string {
  const show = (v: unknown) => (v === null ? "default" : typeof v === "string" ? v : JSON.stringify(v));
  const parts = diffs.slice(0, max).map((d) =>
    `${d.label} ${show(d.stored)} ${there}, ${show(d.current)} now`
  );
  if (diffs.length > max) parts.push(`and ${diffs.length - max} more`);
  return parts.join("; ");
}

/**
 * The config as written into a report: paths inside the repository relative to its root (e.g.
 * "results/smoke-…", ".cache"), so that a report (the stored baseline) names no machine paths;
 * other paths stay absolute. Everything else is unchanged.
 */
export function portableConfig(c: Readonly<MonobenchConfig>, root = REPO_ROOT): MonobenchConfig {
  const p = (x: string) => (isWithin(x, root) ? relative(root, x) || "." : x);
  const q = (x: string | null) => (x === null ? null : p(x));
  return {
    ...c,
    sae: [...c.sae],
    saeModules: c.saeModules.map(p),
    train: { ...c.train },
    seeds: [...c.seeds],
    data: { ...c.data, source: c.data.source === "embedded" ? "embedded" : p(c.data.source) },
    cache: p(c.cache),
    out: p(c.out),
    tolerances: q(c.tolerances),
    baseline: q(c.baseline),
    ...(c.reference ? { reference: { ...c.reference, saeRoot: p(c.reference.saeRoot) } } : {}),
  };
}

/** The trainer's input for one case and seed, derived from the frozen config. */
export function trainInput(
  c: Readonly<MonobenchConfig>,
  kase: { sae: string; expansion: number; k: number },
  seed: number,
): TrainInput {
  const t = c.train;
  return {
    variant: kase.sae,
    expansion: kase.expansion,
    k: kase.k,
    auxkAlpha: t.auxkAlpha,
    deadAfterTokens: t.deadAfterTokens,
    thresholdStartStep: t.thresholdStartStep,
    thresholdBeta: t.thresholdBeta,
    steps: t.steps,
    batchSize: t.batchSize,
    warmupSteps: t.warmupSteps,
    lr: t.lr,
    seed,
  };
}

/** One line per field: value and where it came from (for `--list`). */
export function describeConfig(r: ResolvedConfig): string[] {
  const lines = CONFIG_FIELDS.map((f) => {
    const v = f === "experiment" ? experimentNames(r.config.experiment) : getPath(r.config, f);
    return `  ${f.padEnd(24)} ${JSON.stringify(v)}  (${r.origins[f]})`;
  });
  const ref = r.config.reference;
  if (ref) lines.push(`  ${"reference".padEnd(24)} ${JSON.stringify(ref)}  (measure-reference)`);
  return lines;
}
