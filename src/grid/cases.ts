/**
 * The benchmark cases of a run: the experiments' grids (src/grid/experiments.ts; one file per
 * paper experiment in experiments/), the size presets over them and the `--grid` filter.
 *
 * - An experiment is a cross product layers × SAE types × ε × K. Cases of several experiments
 *   are merged by id, in order of first appearance; a case in two experiments carries both
 *   groups. The default experiments are the paper's main grid (CLIP ViT-L/14-336, layers
 *   11/17/22/23/last × ε ∈ {1, 2, 4, 8, 16, 64} × {batchtopk, matryoshka}, K = 20: 60 cases) and
 *   the K ablation (Matryoshka, last layer, K ∈ {1, 10, 20, 50} at ε = 1, where its K = 20 row
 *   matches Matryoshka-last ×1 in every table although the caption says ε = 16; its K = 20 case
 *   is the main grid's `matryoshka-last-x1-k20`): 63 cases.
 * - A preset sets the training length, batch size, lr rule and seed count, and which cases of
 *   each experiment run: the experiment's own "presets" filter for smoke and default (all of
 *   it when it lists none), every case for paper.
 *
 * The grid does not import the SAE registry: user SAE types are added by name and validated
 * against a list of known names passed in by the caller (e.g. `listSaes()`).
 */
import { MonobenchError } from "../util/errors.ts";
import type { LayerName, PaperLayer } from "../types.ts";
import { defaultExperiments, type Experiment } from "./experiments.ts";

/** A case's group: the "group" of the experiment it comes from, e.g. "main" or "k-ablation". */
export type CaseGroup = string;

/** One benchmark case = one SAE to train and measure. */
export interface BenchCase {
  /** Stable id, `${sae}-${layer}-x${expansion}-k${k}`, e.g. "matryoshka-last-x4-k20". */
  id: string;
  /** Layer name, as the data calls it. */
  layer: LayerName;
  sae: string;
  /** Expansion factor ε (SAE width ω = ε·d). */
  expansion: number;
  /** K of the (batch-)top-K activation. */
  k: number;
  /** The experiments (their groups) this case belongs to. */
  groups: CaseGroup[];
}

/** Learning-rate rule: "code" = 2e-4/√(ω/2¹⁴) (what the public scripts run), "paper" = 16/(125√ω) (§4.1, 5× larger). */
export type LrRule = "code" | "paper";

/** Training hyperparameters carried by a preset (the trainer maps them onto its own options). */
export interface TrainHyper {
  steps: number;
  batchSize: number;
  /** Linear lr warmup length (then constant). */
  warmupSteps: number;
  /** The inference-threshold EMA starts updating after this step. */
  thresholdStartStep: number;
  /** EMA factor of the inference threshold (paper 0.999: a ~1000-step window, 1 % of training). */
  thresholdBeta: number;
  /** A latent is dead (AuxK) after this many training samples without firing. */
  deadAfterTokens: number;
  lrRule: LrRule;
  auxkAlpha: number;
  /** Save a resumable checkpoint every this many steps. */
  checkpointEvery: number;
}

export type PresetName = "smoke" | "default" | "paper";
export const PRESET_NAMES: readonly PresetName[] = ["smoke", "default", "paper"];

export interface Preset {
  name: PresetName;
  description: string;
  cases: BenchCase[];
  hyper: TrainHyper;
  /** Seeds per case (`--seeds` default): every case is trained this many times, seeds 0…N−1. */
  seeds: number;
  /**
   * Suggested data sizes for the embedded default (`prepareEmbedded({nTrain, nEval})`);
   * undefined = use everything available.
   */
  data: { nTrain?: number; nEval?: number };
}

/** The paper's K (main grid). */
export const PAPER_K = 20;

/** The paper's training setup (scripts/monosemanticity_score.sh, trainer defaults). */
export const PAPER_HYPER: Readonly<TrainHyper> = Object.freeze({
  steps: 100_000,
  batchSize: 4096,
  warmupSteps: 1000,
  thresholdStartStep: 1000,
  thresholdBeta: 0.999,
  deadAfterTokens: 10_000_000,
  lrRule: "code",
  auxkAlpha: 0.03,
  checkpointEvery: 20_000,
});

/** Stable case id. */
export function caseId(sae: string, layer: PaperLayer, expansion: number, k: number): string {
  return `${sae}-${layer}-x${expansion}-k${k}`;
}

/** Merge cases into `into` by id (groups are unioned); order of first appearance is kept. */
function mergeCases(into: Map<string, BenchCase>, cases: readonly BenchCase[]): void {
  for (const c of cases) {
    const prev = into.get(c.id);
    if (prev) {
      for (const g of c.groups) if (!prev.groups.includes(g)) prev.groups.push(g);
    } else {
      into.set(c.id, { ...c, groups: [...c.groups] });
    }
  }
}

/** Every case of one experiment: layers × SAE types × ε × K, in that nesting order. */
export function experimentCases(e: Experiment): BenchCase[] {
  const out: BenchCase[] = [];
  for (const layer of e.layers) {
    for (const sae of e.saes) {
      for (const expansion of e.expansions) {
        for (const k of e.k) {
          out.push({ id: caseId(sae, layer, expansion, k), layer, sae, expansion, k, groups: [e.group] });
        }
      }
    }
  }
  return out;
}

/** Every case of the experiments (default: the paper's main grid and K ablation, 63 cases). */
export function paperCases(experiments: readonly Experiment[] = defaultExperiments()): BenchCase[] {
  const m = new Map<string, BenchCase>();
  for (const e of experiments) mergeCases(m, experimentCases(e));
  return [...m.values()];
}

/**
 * Hyperparameters for a small run, scaled from the paper's by the fraction of training:
 * - warmupSteps = thresholdStartStep = 1 % of steps (paper 1000 / 100 000), at least 1;
 * - thresholdBeta = 1 − 1/window with the EMA window = 1 % of steps (paper: β = 0.999, a
 *   1000-step window), at least 10 steps — otherwise the threshold of a short run would still
 *   remember its first, untrained batches;
 * - deadAfterTokens = 2.44 % of all training samples (paper 10⁷ / (10⁵ · 4096)), but at least
 *   4 batches, so that a latent is not declared dead on a single unlucky batch;
 * - checkpointEvery = 20 % of steps (paper 20 000 / 100 000), at least 1;
 * - lr rule "code" and auxkAlpha 0.03 as the paper's scripts.
 */
export function scaledHyper(steps: number, batchSize: number): TrainHyper {
  if (!Number.isInteger(steps) || steps < 1) {
    throw new MonobenchError(`steps must be a positive integer, got ${steps}`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new MonobenchError(`batchSize must be a positive integer, got ${batchSize}`);
  }
  const frac = steps / PAPER_HYPER.steps;
  const tokenFrac = PAPER_HYPER.deadAfterTokens / (PAPER_HYPER.steps * PAPER_HYPER.batchSize);
  return {
    steps,
    batchSize,
    warmupSteps: Math.max(1, Math.round(PAPER_HYPER.warmupSteps * frac)),
    thresholdStartStep: Math.max(1, Math.round(PAPER_HYPER.thresholdStartStep * frac)),
    thresholdBeta: steps === PAPER_HYPER.steps
      ? PAPER_HYPER.thresholdBeta
      : 1 - 1 / Math.max(10, Math.round((1 / (1 - PAPER_HYPER.thresholdBeta)) * frac)),
    deadAfterTokens: Math.max(4 * batchSize, Math.round(steps * batchSize * tokenFrac)),
    lrRule: PAPER_HYPER.lrRule,
    auxkAlpha: PAPER_HYPER.auxkAlpha,
    checkpointEvery: Math.max(1, Math.round(PAPER_HYPER.checkpointEvery * frac)),
  };
}

/** Learning rate of an SAE of width ω under a rule (code: 0.0256/√ω; paper: 0.128/√ω). */
export function learningRate(rule: LrRule, width: number): number {
  if (!(width > 0)) throw new MonobenchError(`SAE width must be positive, got ${width}`);
  return rule === "code" ? 2e-4 / Math.sqrt(width / 2 ** 14) : 16 / (125 * Math.sqrt(width));
}

/**
 * A preset's cases: per experiment its "presets" filter for smoke and default (every case when
 * it has none), every case for paper. Timings of the default experiments on a 2-core x86 machine
 * without a GPU, where `--backend auto` picks cpu-mt (README "Set up"); the embedded default's
 * layers have d = 64 / 96 / 160 / 160 / 320 (11 / 17 / 22 / 23 / last):
 * - smoke: last layer, ε ∈ {1, 2}, both SAEs, K = 20 (4 cases), 30 steps × 64: a few seconds of
 *   training once the data is prepared.
 * - default: the main grid without ε = 64 — all five layers × ε ∈ {1, 2, 4, 8, 16} × both SAEs,
 *   K = 20 — plus the K ablation: 53 cases, 300 steps × 512, 3 seeds: about 5 minutes of cases in
 *   two lanes on a quiet machine, about 6 in all from a fresh clone.
 * - paper: the full grid (63 cases) with the paper's setup: ≈ 1.3e18 flop on CLIP-sized inputs,
 *   roughly a day on one A100-class GPU, far beyond a CPU.
 */
function presetCaseList(name: PresetName, experiments: readonly Experiment[]): BenchCase[] {
  const m = new Map<string, BenchCase>();
  for (const e of experiments) {
    const all = experimentCases(e);
    const expr = name === "paper" ? undefined : e.presets[name];
    mergeCases(m, expr === undefined ? all : applyGridFilter(all, parseGridFilter(expr, all)));
  }
  return [...m.values()];
}

/**
 * Short runs use the paper's lr formula 16/(125√ω) (§4.1), 5× the scripts' rate: measured on the
 * embedded default (last layer, ε = 1, 300 steps) it gives R² 95 % vs 93 % and fewer dead latents
 * than the code's rate, which is tuned for 10⁵ steps. `--lr code` restores the scripts' rate.
 */
const SHORT_RUN_LR: LrRule = "paper";

/**
 * What a preset sets: the training length, batch size and lr rule (the schedule — warmup,
 * threshold start and window, dead-latent window, checkpoints — follows from steps and batch by
 * {@link scaledHyper}, for the paper preset too, where it gives the paper's values), the seed
 * count and the embedded data sizes.
 */
interface PresetInfo {
  description: string;
  steps: number;
  batchSize: number;
  lrRule: LrRule;
  seeds: number;
  data: Preset["data"];
}

/**
 * Seeds of the default preset: 3 is the fewest that gives a usable 95 % t-interval (t₀.₉₇₅ with
 * 2 degrees of freedom is 4.3; with 1 it is 12.7), at 3× the single-seed time.
 */
export const DEFAULT_PRESET_SEEDS = 3;

const PRESET_INFO: Record<PresetName, PresetInfo> = {
  smoke: {
    description: "each experiment's smoke cases (main grid: last layer, ε 1/2, both SAEs, K=20); " +
      "30 steps × 64, 1 seed (under a minute on 2 CPU cores)",
    steps: 30,
    batchSize: 64,
    lrRule: SHORT_RUN_LR,
    seeds: 1,
    data: { nTrain: 2048, nEval: 1000 },
  },
  default: {
    description: "each experiment's default cases (main grid: all layers × ε 1/2/4/8/16 × both SAEs, " +
      `i.e. without ε=64; the K ablation: K 1/10/20/50); 300 steps × 512, ${DEFAULT_PRESET_SEEDS} seeds`,
    steps: 300,
    batchSize: 512,
    lrRule: SHORT_RUN_LR,
    seeds: DEFAULT_PRESET_SEEDS,
    data: { nEval: 2000 }, // nTrain: every remaining balanced digit (6630)
  },
  paper: {
    description: "every case of the experiments (by default the full published grid, 60 + 3 cases) with " +
      "the paper's training setup, 1 seed (hours to days off a GPU)",
    steps: PAPER_HYPER.steps,
    batchSize: PAPER_HYPER.batchSize,
    lrRule: PAPER_HYPER.lrRule,
    seeds: 1,
    data: {},
  },
};

export interface PresetOptions {
  /** User SAE types to add to the preset's grids (experiments with one K: every (layer, ε) at their K). */
  extraSaes?: readonly string[];
  /**
   * Names accepted in `extraSaes` and in the experiments' SAE lists (e.g. the SAE registry's
   * `listSaes()`); required with `extraSaes`.
   */
  knownSaes?: readonly string[];
  /** The experiments whose grids the preset sizes (default: {@link defaultExperiments}). */
  experiments?: readonly Experiment[];
}

/** A preset by name over the experiments, optionally with user SAE types added. */
export function getPreset(name: string, opts: PresetOptions = {}): Preset {
  if (!(PRESET_NAMES as readonly string[]).includes(name)) {
    throw new MonobenchError(`unknown preset "${name}"; valid presets: ${PRESET_NAMES.join(", ")}`);
  }
  const pn = name as PresetName;
  const info = PRESET_INFO[pn];
  const experiments = opts.experiments ?? defaultExperiments();
  if (experiments.length === 0) throw new MonobenchError("no experiment to run");
  const gridGroups = experiments.filter((e) => e.k.length === 1).map((e) => e.group);
  const cases = addSaes(presetCaseList(pn, experiments), opts.extraSaes ?? [], opts.knownSaes, gridGroups);
  if (opts.knownSaes) {
    for (const e of experiments) {
      for (const s of e.saes) {
        if (!opts.knownSaes.includes(s)) {
          throw new MonobenchError(
            `experiment ${e.name} lists unknown SAE type "${s}"; known SAE types: ${
              opts.knownSaes.join(", ")
            }`,
            'register it with --sae-module FILE, or correct the experiment\'s "saes"',
          );
        }
      }
    }
  }
  return {
    name: pn,
    description: info.description,
    cases,
    hyper: { ...scaledHyper(info.steps, info.batchSize), lrRule: info.lrRule },
    seeds: info.seeds,
    data: { ...info.data },
  };
}

/**
 * Add user SAE types to a case list: each gets one case per distinct (layer, ε, K) of the cases
 * in `gridGroups` (default: every case), with their groups. {@link getPreset} passes the groups
 * of the experiments with a single K, so that a user SAE joins the grids at their K but not a K
 * ablation. Names are validated against `knownSaes`.
 */
export function addSaes(
  cases: BenchCase[],
  saes: readonly string[],
  knownSaes?: readonly string[],
  gridGroups?: readonly CaseGroup[],
): BenchCase[] {
  if (saes.length === 0) return cases.map((c) => ({ ...c, groups: [...c.groups] }));
  if (!knownSaes) {
    throw new MonobenchError("addSaes: the list of known SAE names is required to add SAE types");
  }
  for (const s of saes) {
    if (!knownSaes.includes(s)) {
      throw new MonobenchError(`unknown SAE type "${s}"; known SAE types: ${knownSaes.join(", ")}`);
    }
  }
  const m = new Map<string, BenchCase>();
  mergeCases(m, cases);
  const cells: { layer: LayerName; expansion: number; k: number; groups: CaseGroup[] }[] = [];
  for (const c of cases) {
    const groups = gridGroups ? c.groups.filter((g) => gridGroups.includes(g)) : c.groups;
    if (groups.length === 0) continue;
    const p = cells.find((x) => x.layer === c.layer && x.expansion === c.expansion && x.k === c.k);
    if (p) {
      for (const g of groups) if (!p.groups.includes(g)) p.groups.push(g);
    } else cells.push({ layer: c.layer, expansion: c.expansion, k: c.k, groups: [...groups] });
  }
  for (const sae of saes) {
    mergeCases(
      m,
      cells.map((p) => ({
        id: caseId(sae, p.layer, p.expansion, p.k),
        layer: p.layer,
        sae,
        expansion: p.expansion,
        k: p.k,
        groups: [...p.groups],
      })),
    );
  }
  return [...m.values()];
}

// ---- cost model ---------------------------------------------------------------------------------

/**
 * Speeds of a backend on a machine, for {@link estimateCaseSeconds}. Only the ratios between the
 * terms matter for a progress ETA (it rescales by the time the finished cases took); absolute
 * values matter for a time budget.
 */
export interface MachineProfile {
  /** Dense GEMM throughput (encoder, evaluation encode), GFLOP/s. */
  gemmGflops: number;
  /** Per-weight work of a step (Adam, projection, renormalisation, gradient fills), 1e9 weights/s. */
  weightRate: number;
  /** Per-activation work of a step (ReLU, batch top-K selection, gather), 1e9 values/s. */
  activationRate: number;
  /** Sparse decoder work (decode, its gradients: ~8 flop per active entry and input dim), GFLOP/s. */
  sparseGflops: number;
  /** Fixed seconds per training step (batch gather, dispatch, small ops). */
  stepSeconds: number;
  /** Fixed seconds per case (model set-up, checkpoints, evaluation set-up). */
  caseSeconds: number;
  /** Evaluation seconds per (evaluation sample × latent): thresholded encode, MS, R². */
  evalSecondsPerCell: number;
}

/**
 * Profiles of the built-in backends on a 2-core x86 machine ("cpu-mt" with MLAS). "blas" and
 * "cpu" are an earlier fit of single-threaded TypeScript non-GEMM work (and a TypeScript GEMM
 * for "cpu"); a GPU's speed varies far more, so its profile only orders the cases sensibly.
 */
export const MACHINE_PROFILES: Readonly<Record<string, Readonly<MachineProfile>>> = Object.freeze({
  // WebAssembly SIMD kernels + MLAS: fitted (least squares on relative error) to the 159 unit
  // times of one default-preset `deno task reproduce` from a fresh clone on a quiet 2-core
  // machine, training and evaluation separately, with the per-weight and per-activation rates
  // fixed at measured ones (d = 768, ε = 16). The fixed cost per step (dispatch, small ops,
  // AuxK bookkeeping) dominates the small cases. The same run with the machine loaded (load
  // average 3–5) took 1.8× as long.
  "cpu-mt": {
    gemmGflops: 100,
    weightRate: 0.5,
    activationRate: 0.28,
    sparseGflops: 8.5,
    stepSeconds: 0.0029,
    caseSeconds: 0.1,
    evalSecondsPerCell: 1.8e-8,
  },
  blas: {
    gemmGflops: 51,
    weightRate: 0.023,
    activationRate: 0.027,
    sparseGflops: 8,
    stepSeconds: 0.0016,
    caseSeconds: 0.4,
    evalSecondsPerCell: 5.1e-7,
  },
  cpu: {
    gemmGflops: 3.5,
    weightRate: 0.023,
    activationRate: 0.027,
    sparseGflops: 8,
    stepSeconds: 0.0016,
    caseSeconds: 0.4,
    evalSecondsPerCell: 6e-7,
  },
  webgpu: {
    gemmGflops: 20,
    weightRate: 0.05,
    activationRate: 0.1,
    sparseGflops: 10,
    stepSeconds: 0.01,
    caseSeconds: 1,
    evalSecondsPerCell: 5.1e-7,
  },
});

/** The profile of a backend by name (unknown names get the cpu-mt profile). */
export function machineProfile(backend: string): MachineProfile {
  return { ...(MACHINE_PROFILES[backend] ?? MACHINE_PROFILES["cpu-mt"]) };
}

export interface CostAssumptions {
  /** Input dimension per paper layer (default: 1280 everywhere, a conservative bound for the embedded default). */
  dims?: Partial<Record<PaperLayer, number>>;
  /** Dense GEMM throughput in GFLOP/s; overrides the profile's (default: the profile's). */
  gflops?: number;
  /** Evaluation samples (encode + MS), default the preset's nEval or 2000. */
  nEval?: number;
  /** Machine/backend speeds (default: {@link MACHINE_PROFILES} "cpu-mt"). */
  profile?: MachineProfile;
}

/**
 * Rough floating-point cost of training + evaluating a case. Per step the trainer runs a dense
 * encode (2·B·d·ω flop) and O(ω·d) dense work independent of B (Adam on W_enc and W_dec,
 * decoder-gradient projection, renormalisation: ~60 flop per weight); everything else is sparse
 * (O(B·K·d)). Evaluation encodes nEval samples once (2·n·d·ω).
 */
export function estimateCaseFlops(c: BenchCase, d: number, hyper: TrainHyper, nEval: number): number {
  const w = c.expansion * d;
  const train = hyper.steps * w * d * (2 * hyper.batchSize + 60);
  const sparse = hyper.steps * hyper.batchSize * c.k * d * 8;
  return train + sparse + 2 * nEval * d * w;
}

/**
 * Estimated seconds to train and evaluate a case with a backend's {@link MachineProfile}: per
 * step the encoder GEMM, the per-weight work (2·ω·d weights), the per-activation work (B·ω) and
 * the sparse decoder (B·K·d entries × 8 flop), plus a fixed cost per step; per case a fixed cost
 * and the evaluation (nEval·ω cells plus its encode GEMM). A pure function of its arguments.
 */
export function estimateCaseSeconds(
  c: BenchCase,
  d: number,
  hyper: TrainHyper,
  nEval: number,
  profile: MachineProfile,
): number {
  const w = c.expansion * d, B = hyper.batchSize;
  const step = (2 * B * d * w) / (profile.gemmGflops * 1e9) +
    (2 * w * d) / (profile.weightRate * 1e9) +
    (B * w) / (profile.activationRate * 1e9) +
    (8 * B * c.k * d) / (profile.sparseGflops * 1e9) +
    profile.stepSeconds;
  const evaluation = (2 * nEval * d * w) / (profile.gemmGflops * 1e9) +
    nEval * w * profile.evalSecondsPerCell;
  return hyper.steps * step + profile.caseSeconds + evaluation;
}

/** Estimated seconds for a preset's cases under the cost model ({@link estimateCaseSeconds}). */
export function estimatePresetSeconds(p: Preset, a: CostAssumptions = {}): number {
  const profile = { ...(a.profile ?? MACHINE_PROFILES["cpu-mt"]) };
  if (a.gflops !== undefined) profile.gemmGflops = a.gflops;
  const nEval = a.nEval ?? p.data.nEval ?? 2000;
  let s = 0;
  for (const c of p.cases) s += estimateCaseSeconds(c, a.dims?.[c.layer] ?? 1280, p.hyper, nEval, profile);
  return s;
}

// ---- grid filter ----------------------------------------------------------------------------------

/** A parsed `--grid` expression; an undefined field means "any". */
export interface GridFilter {
  layers?: PaperLayer[];
  expansions?: number[];
  saes?: string[];
  ks?: number[];
  groups?: CaseGroup[];
  /** Take cases from this preset's list instead of the run's preset (hyperparameters unchanged). */
  from?: PresetName;
}

const KEY_ALIASES: Record<string, keyof GridFilter> = {
  layers: "layers",
  layer: "layers",
  eps: "expansions",
  ep: "expansions",
  epsilon: "expansions",
  expansion: "expansions",
  expansions: "expansions",
  x: "expansions",
  sae: "saes",
  saes: "saes",
  k: "ks",
  ks: "ks",
  group: "groups",
  groups: "groups",
  from: "from",
};
const CANONICAL_KEYS =
  "layers (layer), eps (ep, epsilon, expansion, x), sae (saes), k (ks), group (groups), from";

/**
 * Parse a grid filter expression: space-separated `key=v1,v2` terms, e.g.
 * `"layers=last,22 eps=1,4 sae=matryoshka k=20"`. Keys may be singular or plural; `all` (alone
 * or as a value) means no restriction. Values are validated against `universe` (the cases the
 * filter will be applied to; default: the paper grid) and `from=` against the preset names.
 */
export function parseGridFilter(expr: string, universe: readonly BenchCase[] = paperCases()): GridFilter {
  const f: GridFilter = {};
  const text = expr.trim();
  if (text === "" || text.toLowerCase() === "all") return f;
  const seenKeys = new Set<string>();
  for (const term of text.split(/\s+/)) {
    const eq = term.indexOf("=");
    if (eq <= 0) {
      throw new MonobenchError(
        `grid filter: expected key=value, got "${term}"`,
        `example: --grid "layers=last,22 eps=1,4 sae=matryoshka k=20"; keys: ${CANONICAL_KEYS}`,
      );
    }
    const rawKey = term.slice(0, eq).toLowerCase();
    const key = KEY_ALIASES[rawKey];
    if (!key) throw new MonobenchError(`grid filter: unknown key "${rawKey}"; valid keys: ${CANONICAL_KEYS}`);
    if (seenKeys.has(key)) throw new MonobenchError(`grid filter: key "${rawKey}" given twice`);
    seenKeys.add(key);
    const values = term.slice(eq + 1).split(",").map((v) => v.trim()).filter((v) => v !== "");
    if (values.length === 0) throw new MonobenchError(`grid filter: no values for "${rawKey}"`);
    if (key === "from") {
      if (values.length !== 1 || !(PRESET_NAMES as readonly string[]).includes(values[0])) {
        throw new MonobenchError(
          `grid filter: from=${values.join(",")}: valid values: ${PRESET_NAMES.join(", ")}`,
        );
      }
      f.from = values[0] as PresetName;
      continue;
    }
    if (values.some((v) => v.toLowerCase() === "all")) continue;
    switch (key) {
      case "layers": {
        const valid = uniq(universe.map((c) => c.layer));
        f.layers = values.map((v) => pick(v, valid, rawKey) as PaperLayer);
        break;
      }
      case "expansions": {
        const valid = uniq(universe.map((c) => c.expansion)).sort((a, b) => a - b);
        f.expansions = values.map((v) => pickNum(v.replace(/^x/i, ""), valid, rawKey));
        break;
      }
      case "saes": {
        const valid = uniq(universe.map((c) => c.sae));
        f.saes = values.map((v) => pick(v.toLowerCase(), valid, rawKey));
        break;
      }
      case "ks": {
        const valid = uniq(universe.map((c) => c.k)).sort((a, b) => a - b);
        f.ks = values.map((v) => pickNum(v, valid, rawKey));
        break;
      }
      case "groups": {
        const valid = uniq(universe.flatMap((c) => c.groups));
        f.groups = values.map((v) => pick(v.toLowerCase(), valid, rawKey) as CaseGroup);
        break;
      }
    }
  }
  return f;
}

function uniq<T>(a: T[]): T[] {
  return [...new Set(a)];
}

function pick(v: string, valid: string[], key: string): string {
  if (!valid.includes(v)) {
    throw new MonobenchError(
      `grid filter: unknown ${key} value "${v}"; valid values: ${valid.join(", ")}, all`,
    );
  }
  return v;
}

function pickNum(v: string, valid: number[], key: string): number {
  const n = Number(v);
  if (v === "" || !Number.isFinite(n) || !valid.includes(n)) {
    throw new MonobenchError(
      `grid filter: unknown ${key} value "${v}"; valid values: ${valid.join(", ")}, all`,
    );
  }
  return n;
}

/** Keep the cases matching every restriction of `f`; an empty result is a MonobenchError. */
export function applyGridFilter(cases: readonly BenchCase[], f: GridFilter, what = "the grid"): BenchCase[] {
  const out = cases.filter((c) =>
    (!f.layers || f.layers.includes(c.layer)) &&
    (!f.expansions || f.expansions.includes(c.expansion)) &&
    (!f.saes || f.saes.includes(c.sae)) &&
    (!f.ks || f.ks.includes(c.k)) &&
    (!f.groups || f.groups.some((g) => c.groups.includes(g)))
  );
  if (out.length === 0) {
    const d = describeCases(cases);
    throw new MonobenchError(
      `grid filter selects no case of ${what} (${cases.length} cases: ${d})`,
      'use --grid "from=paper ..." to pick cases outside the preset, or --preset paper',
    );
  }
  return out.map((c) => ({ ...c, groups: [...c.groups] }));
}

/** Short description of a case list: its layers, ε, SAEs and K values. */
export function describeCases(cases: readonly BenchCase[]): string {
  const l = uniq(cases.map((c) => c.layer));
  const e = uniq(cases.map((c) => c.expansion)).sort((a, b) => a - b);
  const s = uniq(cases.map((c) => c.sae));
  const k = uniq(cases.map((c) => c.k)).sort((a, b) => a - b);
  return `layers ${l.join(",")}; eps ${e.join(",")}; sae ${s.join(",")}; k ${k.join(",")}`;
}

export interface SelectOptions extends PresetOptions {
  /** Grid filter expression (`--grid`), default: everything in the preset. */
  grid?: string;
}

/**
 * The cases of a run: the preset's list (or the `from=` preset's), user SAE types added,
 * filtered by the `--grid` expression; together with the preset's hyperparameters.
 */
export function selectCases(
  presetName: string,
  opts: SelectOptions = {},
): { preset: Preset; cases: BenchCase[] } {
  const preset = getPreset(presetName, opts);
  const expr = opts.grid ?? "";
  // `from=` must be known before values can be validated against the right universe.
  const fromMatch = /(?:^|\s)from=(\S*)/i.exec(expr);
  let base = preset.cases;
  let what = `preset "${preset.name}"`;
  if (fromMatch) {
    const from = fromMatch[1];
    if (!(PRESET_NAMES as readonly string[]).includes(from)) {
      throw new MonobenchError(`grid filter: from=${from}: valid values: ${PRESET_NAMES.join(", ")}`);
    }
    base = getPreset(from, opts).cases;
    what = `preset "${from}"`;
  }
  const f = parseGridFilter(expr, base);
  return { preset, cases: applyGridFilter(base, f, what) };
}
