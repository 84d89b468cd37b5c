/**
 * Merging the run directories of a split run (`--shard i/n`, src/run/shard.ts) into one run
 * directory and one report, built by the same code as a single run's (report/build.ts) and checked
 * against a baseline by the same code (report/baseline.ts).
 *
 * Refused (MonobenchError, exit 2), naming the field and the shards: a directory that is not a
 * shard; shards of another config (config hash, field by field), another selection or split,
 * other code (monobench version, git commit, deno.lock hash, Deno version) or other data (store
 * content hashes); a result that fails the schema; the same (case, seed) in two shards with
 * different results. Reported: units missing because a shard was never given or ran partially
 * (refused unless `partial`), duplicated units with identical results (one kept), results outside
 * the split (ignored). Training time is not a result: duplicates may differ in it.
 *
 * The merged directory is self-contained and a regular run directory (run.json without a shard,
 * layers/, cases/<id>/seed-<s>/, the report files) plus merge.json, which says what was merged.
 * Checkpoint files are hard links to the shards' where the file system allows (no extra space;
 * checkpoints are replaced by rename, never rewritten in place, so a later resume of a shard
 * cannot change them), copies otherwise. An --out is accepted when new, empty, or an earlier
 * merge's output, whose cases and layers are then replaced.
 */
import { basename, join, resolve } from "node:path";
import { atomicWrite } from "../report/atomic.ts";
import {
  type BaselineComparison,
  checkBaselineConfig,
  checkBaselineData,
  compareWithBaseline,
  loadBaseline,
  validateReport,
} from "../report/baseline.ts";
import { buildReport } from "../report/build.ts";
import type { CompareOptions } from "../report/compare.ts";
import { loadTolerances } from "../report/diff.ts";
import { loadFixtures } from "../report/fixtures.ts";
import type { Report } from "../report/types.ts";
import { writeReport } from "../report/writers.ts";
import { sha256Hex, stableStringify } from "../data/hash.ts";
import { compareSketches } from "../data/sketch.ts";
import type { CaseResult, LayerResult } from "../types.ts";
import { asIoError, MonobenchError } from "../util/errors.ts";
import { jsonText, nullAsNaN } from "../util/json.ts";
import { isWithin } from "../util/paths.ts";
import {
  CONFIG_FIELDS,
  type ConfigField,
  configHash,
  type ConfigOrigin,
  diffConfigs,
  type MonobenchConfig,
  portableConfig,
  type ResolvedConfig,
} from "./config.ts";
import type { RunProvenance } from "./provenance.ts";
import { isTempLeftover, openRunDir, parseRunFile, RUN_FILE, type RunFile } from "./rundir.ts";
import { checkSchema, LAYER_SCHEMA, RESULT_SCHEMA } from "./schemas.ts";
import { parseShardRecord, type ShardPlan, type ShardRecord, unitKey, unitsOfShard } from "./shard.ts";
import { LOCK_FILE } from "./lock.ts";

export const MERGE_FILE = "merge.json";

/** What a merged report's run provenance says was merged. */
export interface MergeInfo {
  /** The shard directories, by name (the directory's base name), with their shard and units used. */
  shards: { name: string; shard: string; units: number }[];
  /** Shards of the split. */
  count: number;
  /** Units in the merged report, and units of the split with no result (only with `partial`). */
  units: number;
  missing: { id: string; seed: number; shard: number }[];
  /** Units found in more than one shard with identical results (one kept). */
  duplicates: number;
  /** Results outside the split (e.g. left from another --grid), not merged. */
  ignored: number;
  /** Checkpoints hard-linked, copied, or not present in the shard (e.g. left out of an upload). */
  checkpoints: { linked: number; copied: number; absent: number };
}

interface StoredResult {
  result: CaseResult;
  /** The parsed JSON as stored (nulls as written). */
  raw: Record<string, unknown>;
  /** The (case, seed) directory. */
  dir: string;
}

interface StoredLayer {
  result: LayerResult;
  raw: unknown;
  path: string;
  provenance: Record<string, unknown>;
}

/** One shard directory, read and validated. */
export interface ShardSource {
  dir: string;
  /** How messages name it (the path as given). */
  label: string;
  run: RunFile;
  shard: ShardRecord;
  report: Report | null;
  results: Map<string, StoredResult>;
  layers: Map<string, StoredLayer>;
}

async function readJson(path: string): Promise<unknown | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw asIoError(e, `cannot read ${path}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

async function dirEntries(dir: string): Promise<Deno.DirEntry[]> {
  const out: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw asIoError(e, `cannot read ${dir}`);
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Read a shard run directory: run.json, every result (schema-checked), the layers, the report. */
export async function readShardDir(dir: string, label = dir): Promise<ShardSource> {
  const abs = resolve(dir);
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(abs);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new MonobenchError(
        `shard directory ${label} does not exist`,
        "pass the --out directory of each shard",
      );
    }
    throw asIoError(e, `cannot read ${label}`);
  }
  if (!st.isDirectory) throw new MonobenchError(`shard ${label} is not a directory`);
  const runPath = join(abs, RUN_FILE);
  let runText: string;
  try {
    runText = await Deno.readTextFile(runPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new MonobenchError(
        `${label} is not a monobench run directory (no ${RUN_FILE})`,
        "pass the --out directory of each shard",
      );
    }
    throw asIoError(e, `cannot read ${runPath}`);
  }
  const run = parseRunFile(runPath, runText);
  const shard = parseShardRecord(run.shard, runPath);
  if (!shard) {
    throw new MonobenchError(
      `${label} was run without --shard: only the directories of a split run merge`,
      "a whole run needs no merge; for a split, run each part with --shard i/n and its own --out",
    );
  }
  const results = new Map<string, StoredResult>();
  for (const c of await dirEntries(join(abs, "cases"))) {
    if (!c.isDirectory || isTempLeftover(c.name)) continue;
    for (const s of await dirEntries(join(abs, "cases", c.name))) {
      const m = /^seed-(\d+)$/.exec(s.name);
      if (!s.isDirectory || !m) continue;
      const unitDir = join(abs, "cases", c.name, s.name);
      const path = join(unitDir, "result.json");
      const raw = await readJson(path);
      if (raw === null) continue; // trained partially or not at all: a missing unit
      checkSchema(RESULT_SCHEMA, raw, path);
      const r = raw as Record<string, unknown>;
      if (r.id !== c.name || r.seed !== Number(m[1])) {
        throw new MonobenchError(`${path} holds case ${r.id} seed ${r.seed}, not ${c.name} seed ${m[1]}`);
      }
      const result = JSON.parse(JSON.stringify(raw), nullAsNaN) as CaseResult;
      results.set(unitKey(result.id, result.seed), { result, raw: r, dir: unitDir });
    }
  }
  const layers = new Map<string, StoredLayer>();
  for (const e of await dirEntries(join(abs, "layers"))) {
    if (!e.isFile || !e.name.endsWith(".json")) continue;
    const path = join(abs, "layers", e.name);
    const obj = (await readJson(path)) as { provenance?: unknown; result?: unknown } | null;
    if (!obj || typeof obj !== "object") throw new MonobenchError(`${path}: not a layer file`);
    checkSchema(LAYER_SCHEMA, obj.result, `${path} (result)`);
    const result = JSON.parse(JSON.stringify(obj.result), nullAsNaN) as LayerResult;
    const provenance = (obj.provenance ?? {}) as Record<string, unknown>;
    layers.set(result.layer, { result, raw: obj.result, path, provenance });
  }
  const reportPath = join(abs, "report.json");
  const rawReport = await readJson(reportPath);
  const report = rawReport === null ? null : validateReport(rawReport, reportPath);
  return { dir: abs, label, run, shard, report, results, layers };
}

const short = (v: unknown) => {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return /^[0-9a-f]{40,64}$/.test(s) ? `${s.slice(0, 12)}…` : s;
};

/** "X in a, b; Y in c" for a value → shards map. */
function describeSplit(byValue: Map<string, Set<string>>): string {
  return [...byValue].map(([v, who]) => `${short(v)} in ${[...who].join(", ")}`).join("; ");
}

const CODE_FIELDS = [
  ["monobench", "monobench version"],
  ["gitCommit", "git commit"],
  ["denoLock", "deno.lock hash"],
  ["deno", "Deno version"],
] as const;

/** The shards' config, selection and split must agree (see the module doc). */
function checkSameRun(sources: readonly ShardSource[]): void {
  const [a] = sources;
  for (const b of sources.slice(1)) {
    if (b.run.configHash !== a.run.configHash) {
      const diffs = diffConfigs(a.run.config, b.run.config);
      const what = diffs.length
        ? diffs.slice(0, 3).map((d) =>
          `${d.label} ${short(d.stored ?? "default")} in ${a.label}, ` +
          `${short(d.current ?? "default")} in ${b.label}`
        ).join("; ")
        : `config hash ${short(a.run.configHash)} in ${a.label}, ${short(b.run.configHash)} in ${b.label}`;
      throw new MonobenchError(
        `the shards were run with different configs: ${what}`,
        "every shard of a split must run the same command apart from --shard and --out",
      );
    }
    const pa = portableConfig(a.run.config), pb = portableConfig(b.run.config);
    const fields: [keyof MonobenchConfig, string][] = [
      ["preset", "--preset"],
      ["grid", "--grid"],
      ["sae", "--sae"],
      ["seeds", "--seeds"],
      ["primary", "--primary"],
    ];
    for (const [f, flag] of fields) {
      if (stableStringify(pa[f]) !== stableStringify(pb[f])) {
        throw new MonobenchError(
          `the shards select different work: ${flag} ${JSON.stringify(pa[f])} in ${a.label}, ` +
            `${JSON.stringify(pb[f])} in ${b.label}`,
          "every shard of a split must run the same command apart from --shard and --out",
        );
      }
    }
    if ((a.shard.dataModel ?? null) !== (b.shard.dataModel ?? null)) {
      throw new MonobenchError(
        `the shards' data name different paper models: ${a.shard.dataModel ?? "none"} in ${a.label}, ` +
          `${b.shard.dataModel ?? "none"} in ${b.label}`,
        'the manifests\' "model" decides which paper rows the diff uses; use one manifest for every shard',
      );
    }
    if (b.shard.planHash !== a.shard.planHash) {
      const x = a.shard.plan, y = b.shard.plan;
      let what: string;
      if (x.count !== y.count) what = `into ${x.count} shards in ${a.label}, into ${y.count} in ${b.label}`;
      else what = `over other units or cost estimates in ${a.label} and ${b.label}`;
      throw new MonobenchError(
        `the shards come from different splits: ${what}`,
        "run every shard with the same --shard …/N and the same options",
      );
    }
  }
}

/**
 * Code and data provenance must agree across every shard, report and result. A store that hashes
 * otherwise in some shards is accepted, with a note, when every shard's report has its row
 * sketch and they agree (the same data computed on another CPU; src/data/sketch.ts).
 */
function checkSameCodeAndData(sources: readonly ShardSource[]): string[] {
  const notes: string[] = [];
  const code = new Map<string, Map<string, Set<string>>>();
  const data = new Map<string, Map<string, Set<string>>>();
  const note = (m: Map<string, Map<string, Set<string>>>, k: string, v: unknown, who: string) => {
    if (typeof v !== "string") return;
    if (!m.has(k)) m.set(k, new Map());
    const byValue = m.get(k)!;
    if (!byValue.has(v)) byValue.set(v, new Set());
    byValue.get(v)!.add(who);
  };
  for (const s of sources) {
    const provs: Record<string, unknown>[] = [];
    if (s.report?.run.provenance) provs.push(s.report.run.provenance as unknown as Record<string, unknown>);
    for (const r of s.results.values()) {
      const p = r.result.provenance;
      if (!p) throw new MonobenchError(`${join(r.dir, "result.json")} has no provenance`);
      if (p.configHash !== s.run.configHash) {
        throw new MonobenchError(
          `${join(r.dir, "result.json")} was made with config hash ${
            short(p.configHash)
          }, but ${s.label}'s ` +
            `run.json says ${short(s.run.configHash)}`,
          "rerun that shard",
        );
      }
      provs.push(p as unknown as Record<string, unknown>);
    }
    for (const l of s.layers.values()) provs.push(l.provenance);
    for (const p of provs) {
      for (const [k] of CODE_FIELDS) note(code, k, p[k], s.label);
      for (const [role, h] of Object.entries((p.data ?? {}) as Record<string, unknown>)) {
        note(data, role, h, s.label);
      }
    }
  }
  for (const [k, name] of CODE_FIELDS) {
    const byValue = code.get(k);
    if (byValue && byValue.size > 1) {
      throw new MonobenchError(
        `the shards were run with different code: ${name} ${describeSplit(byValue)}`,
        "run every shard from the same checkout (commit and deno.lock) with the same Deno",
      );
    }
  }
  for (const [role, byValue] of data) {
    if (byValue.size <= 1) continue;
    const sk = sources.map((s) => s.report?.run.provenance?.dataSketch?.[role]);
    const cmp = sk.every((x) => x !== undefined) ? sk.map((x) => compareSketches(sk[0]!, x!)) : null;
    if (cmp && cmp.every((c) => c.same)) {
      const dev = Math.max(...cmp.map((c) => c.deviation));
      notes.push(
        `data store ${role} hashes otherwise in some shards (${describeSplit(byValue)}) but its rows ` +
          `agree to ${dev.toExponential(1)} (floating point of another CPU): merged`,
      );
      continue;
    }
    throw new MonobenchError(
      `the shards were run on different data: store ${role} has hash ${describeSplit(byValue)}`,
      "every shard must read the same activation stores (same --data, same embedded sizes)",
    );
  }
  return notes;
}

/** Canonical text of a result for duplicate detection: everything but the training time. */
function resultIdentity(raw: Record<string, unknown>): string {
  const { trainSeconds: _t, ...rest } = raw;
  return stableStringify(rest);
}

function firstDifference(a: Record<string, unknown>, b: Record<string, unknown>): string {
  for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (k === "trainSeconds") continue;
    if (stableStringify(a[k]) !== stableStringify(b[k])) {
      const v = (x: unknown) => {
        const s = JSON.stringify(x) ?? "absent";
        return s.length > 40 ? `${s.slice(0, 40)}…` : s;
      };
      return `${k}: ${v(a[k])} vs ${v(b[k])}`;
    }
  }
  return "none";
}

/** What a merge will combine (everything checked; nothing written). */
export interface MergePlan {
  sources: ShardSource[];
  plan: ShardPlan;
  config: MonobenchConfig;
  configHash: string;
  /** The kept results in run order, with the source each comes from. */
  units: { stored: StoredResult; source: ShardSource }[];
  layers: { stored: StoredLayer; source: ShardSource }[];
  provenance: RunProvenance;
  dataset: string;
  startedAt: string;
  finishedAt: string;
  info: MergeInfo;
  /** Things a user should know (duplicates, ignored results, missing units with `partial`). */
  notices: string[];
}

/** Check the shards and decide what to merge (see the module doc); `partial` accepts missing units. */
export function planMerge(sources: ShardSource[], partial = false): MergePlan {
  if (sources.length === 0) throw new MonobenchError("nothing to merge: name the shard directories");
  const seen = new Map<string, string>();
  for (const s of sources) {
    const prev = seen.get(s.dir);
    if (prev !== undefined) {
      throw new MonobenchError(`shard directory ${s.label} is given twice (also as ${prev})`);
    }
    seen.set(s.dir, s.label);
  }
  checkSameRun(sources);
  const dataNotes = checkSameCodeAndData(sources);
  const plan = sources[0].shard.plan;
  const notices: string[] = [...dataNotes];

  const inPlan = new Set(plan.units.map((u) => unitKey(u.id, u.seed)));
  let ignored = 0;
  for (const s of sources) {
    const outside = [...s.results.keys()].filter((k) => !inPlan.has(k));
    if (outside.length) {
      ignored += outside.length;
      notices.push(
        `${s.label}: ${outside.length} result(s) outside the split ignored (e.g. ${
          outside[0].replace("|", " seed ")
        })`,
      );
    }
  }
  const byIndex = new Map<number, ShardSource[]>();
  for (const s of sources) {
    if (!byIndex.has(s.shard.index)) byIndex.set(s.shard.index, []);
    byIndex.get(s.shard.index)!.push(s);
  }
  for (const [i, ss] of byIndex) {
    if (ss.length > 1) {
      notices.push(
        `shard ${i}/${plan.count} is given ${ss.length} times: ${ss.map((s) => s.label).join(", ")}`,
      );
    }
  }

  const units: MergePlan["units"] = [];
  const missing: MergeInfo["missing"] = [];
  let duplicates = 0;
  const used = new Map<ShardSource, number>();
  for (const u of plan.units) {
    const key = unitKey(u.id, u.seed);
    // The owning shard's copy first, then the others in the order given.
    const cands = sources
      .filter((s) => s.results.has(key))
      .sort((a, b) => Number(b.shard.index === u.shard) - Number(a.shard.index === u.shard));
    if (cands.length === 0) {
      missing.push({ id: u.id, seed: u.seed, shard: u.shard });
      continue;
    }
    const first = cands[0].results.get(key)!;
    for (const other of cands.slice(1)) {
      const r = other.results.get(key)!;
      if (resultIdentity(r.raw) !== resultIdentity(first.raw)) {
        throw new MonobenchError(
          `case ${u.id} seed ${u.seed} is in ${cands[0].label} and ${other.label} with different results ` +
            `(${firstDifference(first.raw, r.raw)})`,
          "merge one copy only: drop the directory that should not count",
        );
      }
      duplicates++;
    }
    units.push({ stored: first, source: cands[0] });
    used.set(cands[0], (used.get(cands[0]) ?? 0) + 1);
  }
  if (duplicates) {
    notices.push(`${duplicates} (case, seed) unit(s) found in two shards with identical results: one kept`);
  }
  if (units.length === 0) {
    throw new MonobenchError(
      `nothing to merge: none of the ${plan.units.length} units of the split has a result in the shards given`,
    );
  }
  if (missing.length) {
    const parts: string[] = [];
    const absent: number[] = [];
    for (let i = 1; i <= plan.count; i++) {
      const mine = missing.filter((m) => m.shard === i);
      if (!mine.length) continue;
      if (!byIndex.has(i)) {
        absent.push(i);
        continue;
      }
      const of = unitsOfShard(plan, i).length;
      parts.push(
        `shard ${i}/${plan.count} (${byIndex.get(i)!.map((s) => s.label).join(", ")}) ran partially: ` +
          `${mine.length} of its ${of} unit(s) have no result (e.g. ${mine[0].id} seed ${mine[0].seed})`,
      );
    }
    if (absent.length) {
      const mine = missing.filter((m) => absent.includes(m.shard));
      const list = absent.length > 6
        ? `${absent.slice(0, 5).join(", ")}, … ${absent.at(-1)} (${absent.length} shards)`
        : absent.join(", ");
      parts.unshift(
        `${
          absent.length === 1 ? `shard ${list}/${plan.count} was` : `shards ${list} of ${plan.count} were`
        } ` +
          `not given: ${mine.length} unit(s) (e.g. ${mine[0].id} seed ${mine[0].seed})`,
      );
    }
    if (parts.length > 4) parts.splice(4, parts.length - 4, `and ${parts.length - 4} more partial shard(s)`);
    const msg = `${missing.length} of ${plan.units.length} (case, seed) unit(s) missing: ${parts.join("; ")}`;
    if (!partial) {
      throw new MonobenchError(
        msg,
        "run (or resume) the missing shards with the same command and --shard i/N, then merge again; " +
          "or pass --partial for a report over what is there",
      );
    }
    notices.push(`--partial: ${msg}`);
  }

  // Layers in the order a single run measures them: by first appearance in the selection.
  const layerOrder: string[] = [];
  for (const { stored } of units) {
    if (!layerOrder.includes(stored.result.layer)) layerOrder.push(stored.result.layer);
  }
  const caseOrder = [...new Set(plan.units.map((u) => u.id))];
  const layerOf = new Map(units.map(({ stored }) => [stored.result.id, stored.result.layer as string]));
  layerOrder.sort((a, b) => {
    const fa = caseOrder.findIndex((id) => layerOf.get(id) === a);
    const fb = caseOrder.findIndex((id) => layerOf.get(id) === b);
    return fa - fb;
  });
  const layers: MergePlan["layers"] = [];
  for (const l of layerOrder) {
    const cands = sources.filter((s) => s.layers.has(l));
    if (!cands.length) {
      throw new MonobenchError(
        `no shard holds the raw-neuron MS of layer ${l} (layers/${l}.json)`,
        "rerun a shard with cases of that layer: it measures the layer first",
      );
    }
    const first = cands[0].layers.get(l)!;
    for (const other of cands.slice(1)) {
      const x = other.layers.get(l)!;
      if (stableStringify(x.raw) !== stableStringify(first.raw)) {
        throw new MonobenchError(
          `layer ${l}'s raw-neuron MS differs between ${cands[0].label} and ${other.label}`,
          "the shards did not run the same code on the same data; rerun them from one checkout",
        );
      }
    }
    layers.push({ stored: first, source: cands[0] });
  }

  // Run provenance: the common code and data, every backend and device that produced a kept result.
  const a = sources[0];
  const p0 = units[0].stored.result.provenance!;
  const data: Record<string, string> = {};
  for (const s of sources) Object.assign(data, s.report?.run.provenance?.data ?? {});
  for (const { stored } of units) Object.assign(data, stored.result.provenance?.data ?? {});
  const uniq = (xs: string[]) => [...new Set(xs)].sort();
  const backends = uniq(units.map(({ stored }) => stored.result.provenance!.backend));
  const devices = uniq(units.map(({ stored }) => stored.result.provenance!.device));
  if (backends.length > 1 || devices.length > 1) {
    notices.push(
      `results come from ${backends.length} backend(s) and ${devices.length} device(s): ${
        devices.join("; ")
      }`,
    );
  }
  const dirty = sources.map((s) => s.report?.run.provenance?.gitDirty ?? null);
  const info: MergeInfo = {
    shards: sources.map((s) => ({
      name: basename(s.dir),
      shard: `${s.shard.index}/${s.shard.count}`,
      units: used.get(s) ?? 0,
    })),
    count: plan.count,
    units: units.length,
    missing,
    duplicates,
    ignored,
    checkpoints: { linked: 0, copied: 0, absent: 0 },
  };
  const provenance: RunProvenance = {
    monobench: p0.monobench,
    gitCommit: p0.gitCommit,
    gitDirty: dirty.some((d) => d === true) ? true : dirty.every((d) => d === false) ? false : null,
    denoLock: p0.denoLock,
    deno: p0.deno,
    backend: backends.join("+"),
    device: devices.join("; "),
    configHash: a.run.configHash,
    data: Object.fromEntries(Object.entries(data).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))),
    seeds: [...a.run.config.seeds],
    shard: null,
    merge: info,
  };
  const sketch = sources.find((s) => s.report?.run.provenance?.dataSketch)?.report?.run.provenance
    ?.dataSketch;
  if (sketch) provenance.dataSketch = sketch;
  const reports = sources.map((s) => s.report).filter((r): r is Report => r !== null);
  const finished = reports.map((r) => r.run.finishedAt);
  return {
    sources,
    plan,
    config: a.run.config,
    configHash: a.run.configHash,
    units,
    layers,
    provenance,
    dataset: reports[0]?.run.dataset ?? "",
    startedAt: sources.map((s) => s.run.startedAt).sort()[0],
    finishedAt: finished.every((f) => f) && !missing.length ? finished.sort().at(-1)! : "",
    info,
    notices,
  };
}

/** Hard-link (or, across file systems, copy) every file under `src` to `dst`; returns whether all were linked. */
async function linkTree(src: string, dst: string): Promise<boolean> {
  await Deno.mkdir(dst, { recursive: true });
  let allLinked = true;
  for (const e of await dirEntries(src)) {
    if (isTempLeftover(e.name)) continue;
    const s = join(src, e.name), d = join(dst, e.name);
    if (e.isDirectory) allLinked = (await linkTree(s, d)) && allLinked;
    else if (e.isFile) {
      try {
        await Deno.link(s, d);
      } catch {
        await Deno.copyFile(s, d);
        allLinked = false;
      }
    }
  }
  return allLinked;
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.lstat(p);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw asIoError(e, `cannot read ${p}`);
  }
}

/** Replace `dir/name` by a directory filled by `fill` (staged under a temp name, then swapped). */
async function replaceDir(dir: string, name: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const stage = join(dir, `.${name}.merge-${Deno.pid}.tmp`);
  const old = join(dir, `.${name}.old-${Deno.pid}.tmp`);
  await Deno.remove(stage, { recursive: true }).catch(() => {});
  await Deno.mkdir(stage, { recursive: true });
  await fill(stage);
  const target = join(dir, name);
  if (await exists(target)) await Deno.rename(target, old);
  await Deno.rename(stage, target);
  await Deno.remove(old, { recursive: true }).catch(() => {});
}

export interface MergeOptions {
  /** The merged run directory. */
  out: string;
  /** Shard directories (as given: used in messages). */
  dirs: readonly string[];
  /** Write a report even when units are missing. */
  partial?: boolean;
  /** A baseline report.json to check against (regression mode). */
  baseline?: string | null;
  /** Paper-diff tolerances (default: the shards' --tolerances file). */
  tolerances?: string | null;
  compare?: CompareOptions;
  /** The command line (recorded in the report). */
  argv?: readonly string[];
  log?: (message: string) => void;
}

export interface MergeResult {
  out: string;
  report: Report;
  files: string[];
  info: MergeInfo;
  notices: string[];
  comparison?: BaselineComparison;
}

/** Refuse an --out that is a shard, inside one, holds one, or holds something other than a merge of this config. */
async function checkMergeOut(out: string, sources: readonly ShardSource[], hash: string): Promise<void> {
  for (const s of sources) {
    if (isWithin(out, s.dir) || isWithin(s.dir, out)) {
      throw new MonobenchError(
        `--out ${out} ${
          out === s.dir ? "is" : isWithin(out, s.dir) ? "is inside" : "contains"
        } the shard directory ${s.label}`,
        "choose a directory of its own for the merged run",
      );
    }
  }
  const names = (await dirEntries(out)).map((e) => e.name).filter((n) =>
    n !== LOCK_FILE && !isTempLeftover(n)
  );
  if (names.length && !names.includes(MERGE_FILE)) {
    throw new MonobenchError(
      `--out ${out} holds something other than an earlier merge (no ${MERGE_FILE}; it holds ${
        names.slice(0, 3).join(", ")
      })`,
      "choose a new or empty directory for the merged run",
    );
  }
  const run = (await readJson(join(out, RUN_FILE))) as { configHash?: unknown } | null;
  if (run && run.configHash !== hash) {
    throw new MonobenchError(
      `--out ${out} holds the merge of a run with another config`,
      "choose a new directory for the merged run",
    );
  }
}

/** Merge shard directories into `out` (see the module doc). */
export async function mergeRuns(o: MergeOptions): Promise<MergeResult> {
  const log = o.log ?? (() => {});
  const out = resolve(o.out);
  const sources: ShardSource[] = [];
  for (const d of o.dirs) sources.push(await readShardDir(d, d));
  const mp = planMerge(sources, o.partial ?? false);
  for (const n of mp.notices) log(`notice: ${n}`);
  await checkMergeOut(out, sources, mp.configHash);

  const config: MonobenchConfig = {
    ...mp.config,
    out,
    baseline: o.baseline ?? null,
    tolerances: o.tolerances ?? mp.config.tolerances,
    retrainMismatched: false,
  };
  const hash = configHash(config);
  if (hash !== mp.configHash) {
    throw new MonobenchError(
      `the shards' run.json has config hash ${short(mp.configHash)}, but its config hashes to ${
        short(hash)
      } here`,
      "merge with the monobench version that ran the shards",
    );
  }
  const tolerances = config.tolerances ? await loadTolerances(config.tolerances) : undefined;
  const baseline = o.baseline ? await loadBaseline(o.baseline) : undefined;
  if (baseline) {
    checkBaselineConfig(baseline, config, hash);
    for (const n of checkBaselineData(baseline, mp.provenance.data, mp.provenance.dataSketch)) {
      mp.notices.push(n);
      log(`notice: ${n}`);
    }
  }
  const fixtures = await loadFixtures();
  const origins = Object.fromEntries(CONFIG_FIELDS.map((f) => [f, "file"])) as Record<
    ConfigField,
    ConfigOrigin
  >;
  const resolved: ResolvedConfig = { config: Object.freeze(config), hash, origins };
  const run = await openRunDir({
    resolved,
    command: `merge ${(o.argv ?? []).join(" ")}`.trim(),
    log,
    shard: null,
  });
  try {
    const cp = mp.info.checkpoints;
    await replaceDir(out, "cases", async (tmp) => {
      for (const { stored } of mp.units) {
        const r = stored.result;
        const dst = join(tmp, r.id, `seed-${r.seed}`);
        await Deno.mkdir(dst, { recursive: true });
        await Deno.copyFile(join(stored.dir, "result.json"), join(dst, "result.json"));
        if (await exists(join(stored.dir, "provenance.json"))) {
          await Deno.copyFile(join(stored.dir, "provenance.json"), join(dst, "provenance.json"));
        }
        const sae = join(stored.dir, "sae");
        if (await exists(sae)) {
          if (await linkTree(sae, join(dst, "sae"))) cp.linked++;
          else cp.copied++;
        } else cp.absent++;
      }
    }).catch((e) => {
      throw asIoError(e, `cannot write the merged cases in ${out}`);
    });
    await replaceDir(out, "layers", async (tmp) => {
      for (const { stored } of mp.layers) await Deno.copyFile(stored.path, join(tmp, basename(stored.path)));
    }).catch((e) => {
      throw asIoError(e, `cannot write the merged layers in ${out}`);
    });
    if (cp.absent) {
      log(`notice: ${cp.absent} checkpoint(s) not in the shards (left out of an upload?): not merged`);
    }
    const report = buildReport({
      config,
      configHash: hash,
      provenance: mp.provenance,
      runId: basename(out),
      startedAt: mp.startedAt,
      finishedAt: mp.finishedAt || new Date().toISOString(),
      dataset: mp.dataset,
      argv: o.argv,
      layers: mp.layers.map((l) => l.stored.result),
      cases: mp.units.map((u) => u.stored.result),
      fixtures,
      tolerances,
      compare: o.compare,
      model: mp.sources[0].shard.dataModel ?? null,
    });
    const files = await writeReport(out, report);
    await atomicWrite(
      join(out, MERGE_FILE),
      jsonText({
        format: "monobench-merge",
        version: 1,
        mergedAt: new Date().toISOString(),
        planHash: mp.sources[0].shard.planHash,
        reportSha256: sha256Hex(await Deno.readFile(join(out, "report.json"))),
        shards: mp.sources.map((s) => ({
          dir: s.dir,
          shard: `${s.shard.index}/${s.shard.count}`,
          startedAt: s.run.startedAt,
          results: s.results.size,
        })),
        info: mp.info,
        notices: mp.notices,
      }),
    );
    const comparison = baseline ? compareWithBaseline(report, baseline) : undefined;
    return { out, report, files, info: mp.info, notices: mp.notices, comparison };
  } finally {
    await run.close();
  }
}
