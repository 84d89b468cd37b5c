/**
 * Opening a run directory (`--out`): it must be new, empty or a monobench run; never the stored
 * baseline or the repository itself. The run takes the directory's lock, removes temp leftovers
 * of interrupted runs (only the lock holder can, so none is in use), and checks `run.json`: a run
 * whose result-relevant settings differ is refused, naming the fields, unless
 * `--retrain-mismatched` asks to retrain it under the new settings.
 *
 * run.json: `{format: "monobench-run", version, monobench, startedAt, configHash, config, shard}`
 * (`shard`: the part of a split this directory runs, src/run/shard.ts; null for a whole run). A
 * directory started as one shard is refused for another shard, or for the whole run.
 */
import { dirname, join } from "node:path";
import { atomicWrite } from "../report/atomic.ts";
import { asIoError, MonobenchError } from "../util/errors.ts";
import { jsonText } from "../util/json.ts";
import { isWithin, REPO_ROOT } from "../util/paths.ts";
import { describeDifferences, diffConfigs, type MonobenchConfig, type ResolvedConfig } from "./config.ts";
import { acquireRunLock, LOCK_FILE, type RunLock } from "./lock.ts";
import { softwareInfo } from "./provenance.ts";
import { checkSameShard, parseShardRecord, type ShardRecord } from "./shard.ts";

export const RUN_FILE = "run.json";
export const RUN_FORMAT = "monobench-run";
export const RUN_VERSION = 2;

export interface RunFile {
  format: typeof RUN_FORMAT;
  version: number;
  monobench: string;
  startedAt: string;
  configHash: string;
  config: MonobenchConfig;
  /** The shard of a split this directory runs (absent in older run files: none). */
  shard?: ShardRecord | null;
}

/** Names left behind by interrupted atomic writes (temp files and directories). */
export function isTempLeftover(name: string): boolean {
  return name.endsWith(".tmp") || /\.tmp-\d+-[a-z0-9]+$/.test(name);
}

/** The stored baseline directory of this checkout. */
export const BASELINE_DIR = join(REPO_ROOT, "results", "baseline");

/** Refuse run directories that would overwrite something that is not a run. */
function checkOutLocation(dir: string, config: Readonly<MonobenchConfig>): void {
  // The stored baseline's directory and everything in it; the directory of --baseline itself.
  const guarded: [string, string, boolean][] = [[BASELINE_DIR, "the stored baseline directory", true]];
  if (config.baseline) guarded.push([dirname(config.baseline), "the directory of --baseline", false]);
  for (const [p, what, inside] of guarded) {
    if (inside ? isWithin(dir, p) : dir === p) {
      throw new MonobenchError(
        `--out ${dir} is ${dir === p ? "" : "inside "}${what} (${p}): the run would overwrite the baseline`,
        "choose another directory; to refresh the baseline, copy a finished run's report.json there (results/README.md)",
      );
    }
  }
  if (isWithin(REPO_ROOT, dir)) {
    throw new MonobenchError(
      `--out ${dir} is the repository or a directory above it`,
      "choose a directory of its own, e.g. --out results/my-run",
    );
  }
}

async function entriesOf(dir: string): Promise<string[] | null> {
  try {
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    return names;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    if (e instanceof Deno.errors.NotADirectory) {
      throw new MonobenchError(`--out ${dir} exists and is not a directory`);
    }
    throw asIoError(e, `cannot read --out ${dir}`);
  }
}

/** Remove temp leftovers under `dir` (depth ≤ 4: cases/<id>/seed-<s>/…); returns how many. */
export async function cleanTempLeftovers(dir: string, depth = 4): Promise<number> {
  let removed = 0;
  const walk = async (d: string, level: number) => {
    const list: Deno.DirEntry[] = [];
    try {
      for await (const e of Deno.readDir(d)) list.push(e);
    } catch {
      return;
    }
    for (const e of list) {
      const p = join(d, e.name);
      if (isTempLeftover(e.name)) {
        await Deno.remove(p, { recursive: true }).then(() => removed++, () => {});
      } else if (e.isDirectory && level < depth) await walk(p, level + 1);
    }
  };
  await walk(dir, 1);
  return removed;
}

export function parseRunFile(path: string, text: string): RunFile {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(
      `${path} is malformed: ${(e as Error).message}`,
      "choose another --out directory",
    );
  }
  if (j === null || typeof j !== "object" || j.format !== RUN_FORMAT) {
    throw new MonobenchError(
      `${path} was written by an older monobench version (or is not a run file)`,
      "start the run in a new --out directory",
    );
  }
  if (j.version !== RUN_VERSION) {
    throw new MonobenchError(
      `${path} has run-file version ${
        JSON.stringify(j.version)
      }; this monobench reads version ${RUN_VERSION}`,
      "start the run in a new --out directory",
    );
  }
  const c = j.config as Record<string, unknown> | undefined;
  if (
    typeof j.configHash !== "string" || typeof j.startedAt !== "string" || !c || typeof c !== "object" ||
    typeof c.train !== "object" || typeof c.data !== "object"
  ) {
    throw new MonobenchError(`${path} is malformed (missing config, configHash or startedAt)`);
  }
  parseShardRecord(j.shard, path);
  return j as unknown as RunFile;
}

export interface RunDir {
  dir: string;
  startedAt: string;
  /** Whether the directory already held this run. */
  resumed: boolean;
  lock: RunLock;
  /** Release the lock. */
  close(): Promise<void>;
}

export interface OpenRunDirOptions {
  resolved: ResolvedConfig;
  /** Recorded in the lock for whoever finds it. */
  command: string;
  log?: (message: string) => void;
  /** The shard this invocation runs (`--shard`), recorded in run.json; null/absent: the whole run. */
  shard?: ShardRecord | null;
}

/** Open (or create) the run directory `resolved.config.out`, holding its lock (see the module doc). */
export async function openRunDir(opts: OpenRunDirOptions): Promise<RunDir> {
  const { config, hash } = opts.resolved;
  const dir = config.out;
  const log = opts.log ?? (() => {});
  checkOutLocation(dir, config);
  const before = await entriesOf(dir);
  if (before && !before.includes(RUN_FILE)) {
    const other = before.filter((n) => n !== LOCK_FILE && !isTempLeftover(n));
    if (other.length > 0) {
      throw new MonobenchError(
        `--out ${dir} is not empty and is not a monobench run directory (no ${RUN_FILE}; it holds ${
          other.slice(0, 3).join(", ")
        }${other.length > 3 ? ", …" : ""})`,
        "choose a new or empty directory",
      );
    }
  }
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new MonobenchError(
      `cannot create the run directory ${dir}: ${(e as Error).message}`,
      "choose a directory you can write to with --out",
    );
  }
  const lock = await acquireRunLock(dir, { command: opts.command, onNotice: log });
  try {
    const removed = await cleanTempLeftovers(dir);
    if (removed > 0) log(`removed ${removed} temp leftover(s) of an interrupted run in ${dir}`);
    const runPath = join(dir, RUN_FILE);
    let stored: RunFile | null = null;
    try {
      stored = parseRunFile(runPath, await Deno.readTextFile(runPath));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw asIoError(e, `cannot read ${runPath}`);
    }
    let startedAt = new Date().toISOString();
    if (stored) checkSameShard(dir, stored.shard ?? null, opts.shard ?? null);
    if (stored) {
      if (stored.configHash !== hash) {
        const diffs = diffConfigs(stored.config, config);
        const what = diffs.length ? describeDifferences(diffs) : "the stored config has another format";
        if (!config.retrainMismatched) {
          throw new MonobenchError(
            `${dir} holds a run with other settings: ${what}`,
            "repeat the original options to resume it, choose another --out, or pass --retrain-mismatched " +
              "to retrain its cases with the new settings",
          );
        }
        log(`--retrain-mismatched: ${dir} held a run with other settings (${what}); its cases are retrained`);
      } else {
        startedAt = stored.startedAt;
        log(`resuming the run in ${dir}`);
      }
    }
    const sw = await softwareInfo();
    const file: RunFile = {
      format: RUN_FORMAT,
      version: RUN_VERSION,
      monobench: sw.monobench,
      startedAt,
      configHash: hash,
      config: config as MonobenchConfig,
      shard: opts.shard ?? null,
    };
    await atomicWrite(runPath, jsonText(file));
    return { dir, startedAt, resumed: stored !== null, lock, close: () => lock.release() };
  } catch (e) {
    await lock.release();
    throw e;
  }
}
