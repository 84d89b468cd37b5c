/**
 * Provenance of results: the software (monobench version, git commit, deno.lock, Deno), the
 * compute (backend and device), the config hash, the content hashes of the data stores read and
 * the seed. A stored case is reused only when every field equals the current run's.
 */
import { join } from "node:path";
import denoJson from "../../deno.json" with { type: "json" };
import { sha256Hex } from "../data/hash.ts";
import type { Provenance } from "../types.ts";
import type { MergeInfo } from "./merge.ts";
import type { ShardInfo } from "./shard.ts";
import { REPO_ROOT } from "../util/paths.ts";

export type { Provenance };

/** The software part of the provenance (the same for every case of a run). */
export interface SoftwareInfo {
  monobench: string;
  gitCommit: string;
  /** Whether tracked files differ from the commit (informative; null without git). */
  gitDirty: boolean | null;
  denoLock: string;
  deno: string;
}

/** Provenance of a report: everything of a case's except the seed, plus the seed list. */
export interface RunProvenance extends Omit<Provenance, "seed"> {
  gitDirty: boolean | null;
  seeds: number[];
  /** The shard of a split this run is (`--shard`; src/run/shard.ts); absent or null: the whole run. */
  shard?: ShardInfo | null;
  /** For a report merged from shards (`deno task merge`): what was merged. */
  merge?: MergeInfo;
  /**
   * Row sketches of the stores, by role (src/data/sketch.ts): a baseline made on the same data
   * whose stores hash otherwise (another CPU's low bits) is still compared.
   */
  dataSketch?: Record<string, number[]>;
}

async function git(args: string[]): Promise<string | null> {
  try {
    const out = await new Deno.Command("git", {
      args: ["-C", REPO_ROOT, ...args],
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null; // no git, or no permission to run it
  }
}

let software: Promise<SoftwareInfo> | null = null;

/** Software provenance of this checkout (computed once per process; never fails). */
export function softwareInfo(): Promise<SoftwareInfo> {
  return software ??= (async () => {
    const head = await git(["rev-parse", "HEAD"]);
    const commit = head && /^[0-9a-f]{40,64}$/.test(head) ? head : "unknown";
    const status = commit === "unknown" ? null : await git(["status", "--porcelain", "--untracked-files=no"]);
    let lock = "unknown";
    try {
      lock = sha256Hex(await Deno.readFile(join(REPO_ROOT, "deno.lock")));
    } catch {
      // no lock file: "unknown"
    }
    return {
      monobench: typeof denoJson.version === "string" ? denoJson.version : "unknown",
      gitCommit: commit,
      gitDirty: status === null ? null : status.length > 0,
      denoLock: lock,
      deno: Deno.version.deno,
    };
  })();
}

/** A case's provenance. */
export function caseProvenance(
  sw: SoftwareInfo,
  backend: { name: string; description: string },
  configHash: string,
  data: Record<string, string>,
  seed: number,
): Provenance {
  return {
    monobench: sw.monobench,
    gitCommit: sw.gitCommit,
    denoLock: sw.denoLock,
    deno: sw.deno,
    backend: backend.name,
    device: backend.description,
    configHash,
    data: sortedRecord(data),
    seed,
  };
}

function sortedRecord(r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A field in which a stored provenance differs from the current one. */
export interface ProvenanceDifference {
  /** e.g. "backend", "configHash", "data.train:last". */
  field: string;
  stored: string;
  current: string;
}

const FIELD_NAMES: Record<string, string> = {
  monobench: "monobench version",
  gitCommit: "git commit",
  denoLock: "deno.lock hash",
  deno: "Deno version",
  backend: "backend",
  device: "device",
  configHash: "config hash",
  seed: "seed",
};

/** Fields that differ (stored vs current); a missing stored field differs as "missing". */
export function diffProvenance(
  stored: Partial<Provenance> | undefined,
  current: Provenance,
): ProvenanceDifference[] {
  const out: ProvenanceDifference[] = [];
  const s = stored ?? {};
  for (
    const k of [
      "monobench",
      "gitCommit",
      "denoLock",
      "deno",
      "backend",
      "device",
      "configHash",
      "seed",
    ] as const
  ) {
    const a = s[k], b = current[k];
    if (a !== b) out.push({ field: k, stored: a === undefined ? "missing" : String(a), current: String(b) });
  }
  const sd = (s.data ?? {}) as Record<string, string>;
  for (const k of new Set([...Object.keys(sd), ...Object.keys(current.data)])) {
    const a = sd[k], b = current.data[k];
    if (a !== b) out.push({ field: `data.${k}`, stored: a ?? "missing", current: b ?? "not read" });
  }
  return out;
}

/** "backend: cpu there, blas now" (hashes shortened). */
export function describeProvenanceDiff(d: ProvenanceDifference): string {
  const name = d.field.startsWith("data.")
    ? `data store ${d.field.slice(5)}`
    : FIELD_NAMES[d.field] ?? d.field;
  const short = (v: string) => (/^[0-9a-f]{40,64}$/.test(v) ? v.slice(0, 12) : v);
  return `${name}: ${short(d.stored)} there, ${short(d.current)} now`;
}
