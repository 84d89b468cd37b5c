/**
 * Splitting a run across machines: `--shard i/n` runs the i-th of n parts of the selected work.
 *
 * - The unit of work is one (case, seed): seeds of one case are independent trainings, so they
 *   may land in different shards. That balances better than whole cases (a grid with one huge
 *   case and three seeds can use three machines) and lets n go up to the number of units.
 * - The split is greedy longest-processing-time over the cost model of src/grid/cases.ts
 *   (`estimateCaseSeconds`): units in decreasing estimated cost (ties by case id, then seed) each
 *   go to the shard with the least estimated work so far (ties to the lowest index). It depends
 *   only on the selection, the seeds, the training length and batch, and the layer widths and
 *   evaluation sizes — never on the backend or the machine: every shard computes the same plan,
 *   and shards run on different backends still belong to one split. Costs use the cpu-mt
 *   profile whatever the backend: on the default preset a split planned with it is within 1.5 %
 *   of balanced under the webgpu profile too (8 shards; 0.7 % with 4). Shards are numbered 1…n.
 * - The shard is not part of the config hash: results of every shard carry the same provenance and
 *   merge (src/run/merge.ts). The full plan is kept in each shard's run.json, so that a merge can
 *   name the units of a shard that never ran; the report's run provenance names the shard.
 */
import {
  type BenchCase,
  estimateCaseSeconds,
  type MachineProfile,
  machineProfile,
  scaledHyper,
} from "../grid/cases.ts";
import { sha256Hex, stableStringify } from "../data/hash.ts";
import { MonobenchError } from "../util/errors.ts";
import type { MonobenchConfig } from "./config.ts";
import type { RunData } from "./data.ts";

/** `--shard i/n`: the i-th (1-based) of n shards. */
export interface ShardSpec {
  index: number;
  count: number;
}

/** Most shards a run may be split into. */
export const MAX_SHARDS = 10_000;

const SHARD_HINT =
  "use --shard i/n with 1 ≤ i ≤ n, e.g. --shard 2/4; a 0-based array index needs +1: --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT";

/** Parse `i/n` (whole numbers, 1 ≤ i ≤ n); anything else is a MonobenchError naming the value. */
export function parseShardSpec(text: string): ShardSpec {
  const m = /^\s*(\d{1,6})\s*\/\s*(\d{1,6})\s*$/.exec(text);
  if (!m) {
    throw new MonobenchError(`--shard ${JSON.stringify(text)} is not of the form i/n`, SHARD_HINT);
  }
  const index = Number(m[1]), count = Number(m[2]);
  if (count < 1) throw new MonobenchError(`--shard ${text}: the shard count must be at least 1`, SHARD_HINT);
  if (count > MAX_SHARDS) {
    throw new MonobenchError(`--shard ${text}: at most ${MAX_SHARDS} shards`, SHARD_HINT);
  }
  if (index < 1) {
    throw new MonobenchError(`--shard ${text}: shards are numbered from 1, not 0`, SHARD_HINT);
  }
  if (index > count) {
    throw new MonobenchError(`--shard ${text}: shard ${index} of ${count} does not exist`, SHARD_HINT);
  }
  return { index, count };
}

export function shardLabel(s: ShardSpec): string {
  return `${s.index}/${s.count}`;
}

/** One (case, seed) of the selection with its shard and estimated seconds. */
export interface PlannedUnit {
  id: string;
  seed: number;
  shard: number;
  seconds: number;
}

/** What the unit costs were estimated from (recorded with the plan). */
export interface CostBasis {
  /** The cost profile (src/grid/cases.ts MACHINE_PROFILES), {@link SPLIT_PROFILE}. */
  profile: string;
  steps: number;
  batchSize: number;
  /** Input width and evaluation rows per layer. */
  layers: Record<string, { d: number; nEval: number }>;
}

/** The split of a whole selection into `count` shards. */
export interface ShardPlan {
  count: number;
  basis: CostBasis;
  /** Every unit of the selection in run order (seed by seed, cases in selection order). */
  units: PlannedUnit[];
}

/** What a shard's run.json records. */
export interface ShardRecord {
  format: "monobench-shard";
  version: 1;
  index: number;
  count: number;
  /** sha256 of the plan's canonical JSON: equal for all shards of one split. */
  planHash: string;
  plan: ShardPlan;
  /**
   * The paper model the data names (a manifest's "model"; null: none), which the report's paper
   * diff depends on: recorded so that a merge builds the report as the shard did.
   */
  dataModel?: string | null;
}

/** The shard as named in a report's run provenance. */
export interface ShardInfo {
  spec: string;
  index: number;
  count: number;
  /** Units of this shard, of all shards, and their estimated seconds. */
  units: number;
  totalUnits: number;
  estimatedSeconds: number;
  totalEstimatedSeconds: number;
  profile: string;
  planHash: string;
}

/** Unit key used across run, shard and merge code. */
export function unitKey(id: string, seed: number): string {
  return `${id}|${seed}`;
}

/**
 * Input widths of the embedded default's layers (MobileNetV2 channels; README "What reproduce
 * does"). Fixed here so that a shard can be planned, and listed, before the data is prepared.
 */
export const EMBEDDED_LAYER_DIMS: Readonly<Record<string, number>> = Object.freeze({
  "11": 64,
  "17": 96,
  "22": 160,
  "23": 160,
  last: 320,
});

/** Width assumed for a layer of unknown width (the cost model's conservative default). */
const UNKNOWN_DIM = 1280;

/** The embedded default's evaluation rows (EMBEDDED_DEFAULTS.nEval, not imported: that module loads the ONNX code). */
export const EMBEDDED_DEFAULT_NEVAL = 2000;

/** The cost profile every split is planned with (see the module doc). */
export const SPLIT_PROFILE = "cpu-mt";

/**
 * The cost basis of a run: layer widths and evaluation sizes from the data for a manifest, from
 * {@link EMBEDDED_LAYER_DIMS} and the configured sizes for the embedded default.
 */
export function costBasis(
  config: Readonly<MonobenchConfig>,
  cases: readonly BenchCase[],
  data?: Pick<RunData, "layers">,
): CostBasis {
  const layers: Record<string, { d: number; nEval: number }> = {};
  for (const l of [...new Set(cases.map((c) => c.layer as string))].sort()) {
    if (config.data.source === "embedded") {
      layers[l] = {
        d: EMBEDDED_LAYER_DIMS[l] ?? UNKNOWN_DIM,
        nEval: config.data.nEval ?? EMBEDDED_DEFAULT_NEVAL,
      };
    } else {
      const dl = data?.layers.find((x) => x.layer === l);
      layers[l] = { d: dl?.d ?? UNKNOWN_DIM, nEval: dl?.eval.n ?? EMBEDDED_DEFAULT_NEVAL };
    }
  }
  return {
    profile: SPLIT_PROFILE,
    steps: config.train.steps,
    batchSize: config.train.batchSize,
    layers,
  };
}

/** Estimated seconds of one case under a basis. */
export function unitSeconds(c: BenchCase, basis: CostBasis, profile?: MachineProfile): number {
  const l = basis.layers[c.layer] ?? { d: UNKNOWN_DIM, nEval: EMBEDDED_DEFAULT_NEVAL };
  return estimateCaseSeconds(
    c,
    l.d,
    scaledHyper(basis.steps, basis.batchSize),
    l.nEval,
    profile ?? machineProfile(basis.profile),
  );
}

/** Split every (case, seed) unit into `count` shards (see the module doc). */
export function planShards(
  cases: readonly BenchCase[],
  seeds: readonly number[],
  count: number,
  basis: CostBasis,
): ShardPlan {
  const profile = machineProfile(basis.profile);
  const cost = new Map(cases.map((c) => [c.id, unitSeconds(c, basis, profile)]));
  const units: PlannedUnit[] = seeds.flatMap((seed) =>
    cases.map((c) => ({ id: c.id, seed, shard: 0, seconds: cost.get(c.id)! }))
  );
  if (new Set(units.map((u) => unitKey(u.id, u.seed))).size !== units.length) {
    throw new MonobenchError("internal: the selection lists a case twice");
  }
  if (count > units.length) {
    throw new MonobenchError(
      `--shard …/${count}: the selection has only ${units.length} (case, seed) unit(s), so at most ` +
        `${units.length} shards can each get one`,
      `use --shard i/${units.length} or fewer shards, or select more cases or seeds`,
    );
  }
  const shards = assignLpt(units.map((u) => ({ key: [u.id, u.seed], seconds: u.seconds })), count);
  units.forEach((u, i) => (u.shard = shards[i]));
  return { count, basis, units };
}

/**
 * Greedy longest-processing-time: items in decreasing cost (ties by `key`, compared element by
 * element) each go to the least loaded of `count` bins (ties to the lowest). Returns each item's
 * bin, 1-based. Its makespan is at most 4/3 − 1/(3·count) of the optimum (Graham, 1969).
 */
export function assignLpt(
  items: readonly { key: readonly (string | number)[]; seconds: number }[],
  count: number,
): number[] {
  const cmpKey = (a: readonly (string | number)[], b: readonly (string | number)[]) => {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (a[i] === b[i]) continue;
      if (a[i] === undefined) return -1;
      if (b[i] === undefined) return 1;
      return a[i] < b[i] ? -1 : 1;
    }
    return 0;
  };
  const order = items.map((_, i) => i).sort((a, b) =>
    items[b].seconds - items[a].seconds || cmpKey(items[a].key, items[b].key)
  );
  const load = new Array<number>(count).fill(0);
  const out = new Array<number>(items.length);
  for (const i of order) {
    let best = 0;
    for (let s = 1; s < count; s++) if (load[s] < load[best]) best = s;
    load[best] += items[i].seconds;
    out[i] = best + 1;
  }
  return out;
}

/** The record a shard keeps in run.json. */
export function shardRecord(plan: ShardPlan, spec: ShardSpec, dataModel: string | null = null): ShardRecord {
  if (spec.count !== plan.count) throw new MonobenchError("internal: shard spec and plan disagree");
  return {
    format: "monobench-shard",
    version: 1,
    index: spec.index,
    count: spec.count,
    planHash: planHash(plan),
    plan,
    dataModel,
  };
}

export function planHash(plan: ShardPlan): string {
  return sha256Hex(stableStringify(plan));
}

/** The units of shard `index` (1-based), in run order. */
export function unitsOfShard(plan: ShardPlan, index: number): PlannedUnit[] {
  return plan.units.filter((u) => u.shard === index);
}

/** Estimated seconds per shard (index 0 = shard 1). */
export function shardLoads(plan: ShardPlan): number[] {
  const load = new Array<number>(plan.count).fill(0);
  for (const u of plan.units) load[u.shard - 1] += u.seconds;
  return load;
}

/** The shard as the report's provenance names it. */
export function shardInfo(rec: ShardRecord): ShardInfo {
  const mine = unitsOfShard(rec.plan, rec.index);
  const sum = (xs: PlannedUnit[]) => xs.reduce((a, u) => a + u.seconds, 0);
  return {
    spec: `${rec.index}/${rec.count}`,
    index: rec.index,
    count: rec.count,
    units: mine.length,
    totalUnits: rec.plan.units.length,
    estimatedSeconds: sum(mine),
    totalEstimatedSeconds: sum(rec.plan.units),
    profile: rec.plan.basis.profile,
    planHash: rec.planHash,
  };
}

/** "2/3" for a record, "the whole run" for none. */
export function describeShard(rec: { index: number; count: number } | null | undefined): string {
  return rec ? `shard ${rec.index}/${rec.count}` : "the whole selection (no --shard)";
}

/**
 * Refuse reopening a run directory with another shard than it was started with: its results
 * would mix two parts of a split (or a part and the whole).
 */
export function checkSameShard(dir: string, stored: ShardRecord | null, current: ShardRecord | null): void {
  const a = stored ? `${stored.index}/${stored.count}` : "";
  const b = current ? `${current.index}/${current.count}` : "";
  if (a === b) return;
  throw new MonobenchError(
    `${dir} holds ${describeShard(stored)}; this run is ${describeShard(current)}`,
    stored
      ? `repeat --shard ${a} to resume it, or choose another --out for each shard`
      : "choose another --out for each shard",
  );
}

function fmtSeconds(s: number): string {
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** `--list` lines for a shard: its units with their estimated cost, and the balance of the split. */
export function describeShardPlan(rec: ShardRecord): string[] {
  const info = shardInfo(rec);
  const loads = shardLoads(rec.plan);
  const mean = info.totalEstimatedSeconds / rec.count;
  const max = Math.max(...loads);
  const lines = [
    `shard ${info.spec}: ${info.units} of ${info.totalUnits} (case, seed) unit(s), estimated ` +
    `${fmtSeconds(info.estimatedSeconds)} of ${fmtSeconds(info.totalEstimatedSeconds)} ` +
    `(cost profile ${info.profile}: relative costs, the absolute times are rough)`,
    `  split: largest shard ${fmtSeconds(max)}, mean ${fmtSeconds(mean)} ` +
    `(${mean > 0 ? ((max / mean - 1) * 100).toFixed(1) : "0.0"} % above the mean)`,
  ];
  for (const u of unitsOfShard(rec.plan, rec.index)) {
    lines.push(`  ${u.id}  seed ${u.seed}  ~${fmtSeconds(u.seconds)}`);
  }
  return lines;
}

/** Check a run.json "shard" value read back from disk; returns null when absent. */
export function parseShardRecord(v: unknown, what: string): ShardRecord | null {
  if (v === undefined || v === null) return null;
  const bad = (why: string): never => {
    throw new MonobenchError(
      `${what}: malformed "shard" record (${why})`,
      "run the shard again in a new --out",
    );
  };
  if (typeof v !== "object" || Array.isArray(v)) bad("not an object");
  const r = v as Record<string, unknown>;
  if (r.format !== "monobench-shard" || r.version !== 1) bad("unknown format or version");
  const p = r.plan as Record<string, unknown> | undefined;
  if (!Number.isInteger(r.index) || !Number.isInteger(r.count)) bad("index/count");
  if (!p || typeof p !== "object" || !Array.isArray(p.units) || p.count !== r.count) bad("plan");
  for (const u of p!.units as unknown[]) {
    const x = u as Record<string, unknown>;
    if (
      !x || typeof x.id !== "string" || !Number.isInteger(x.seed) || !Number.isInteger(x.shard) ||
      typeof x.seconds !== "number" || (x.shard as number) < 1 || (x.shard as number) > (r.count as number)
    ) bad("plan unit");
  }
  if (r.dataModel !== undefined && r.dataModel !== null && typeof r.dataModel !== "string") bad("dataModel");
  const rec = v as ShardRecord;
  if (planHash(rec.plan) !== rec.planHash) bad("the plan does not match its hash");
  if ((r.index as number) < 1 || (r.index as number) > (r.count as number)) bad("index out of range");
  return rec;
}
