/**
 * A lock on a run directory: `run.lock`, created with O_EXCL and holding the owner's pid, host,
 * start time and command. A second run on the directory fails at once naming the holder. A
 * lock whose process is gone (same host; on Linux also a recycled pid, told apart by the
 * process start time) is stale and is taken over with a notice. A lock from another host cannot
 * be judged and is refused with a hint.
 */
import { join } from "node:path";
import { MonobenchError } from "../util/errors.ts";

export const LOCK_FILE = "run.lock";

export interface LockInfo {
  pid: number;
  hostname: string;
  /** ISO time the lock was taken. */
  startedAt: string;
  command: string;
  /** Linux: start time of the process (clock ticks since boot), to detect pid reuse. */
  procStart: string | null;
  /** Random token: the lock is released only by its owner. */
  token: string;
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/** Field 22 of /proc/<pid>/stat (process start time), or null where there is no /proc. */
function procStart(pid: number): string | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name (field 2) is in parentheses and may contain spaces.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether process `pid` (of this host) is alive; "unknown" where that cannot be told. */
export async function processAlive(pid: number, start: string | null): Promise<boolean | "unknown"> {
  if (pid === Deno.pid) return true;
  if (Deno.build.os === "linux") {
    try {
      await Deno.stat(`/proc/${pid}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      return "unknown";
    }
    if (start !== null) {
      const now = procStart(pid);
      if (now !== null && now !== start) return false; // the pid was recycled
    }
    return true;
  }
  if (Deno.build.os === "windows") return "unknown";
  try {
    const r = await new Deno.Command("kill", { args: ["-0", String(pid)], stderr: "null", stdout: "null" })
      .output();
    return r.success;
  } catch {
    return "unknown";
  }
}

function describe(l: LockInfo): string {
  return `pid ${l.pid} on ${l.hostname}, since ${l.startedAt}: ${l.command}`;
}

async function readLock(path: string): Promise<LockInfo | null | "malformed"> {
  // A lock is written right after its O_EXCL creation: give a writer a moment before calling it malformed.
  for (let attempt = 0; attempt < 5; attempt++) {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
    try {
      const j = JSON.parse(text);
      if (typeof j.pid === "number" && typeof j.hostname === "string" && typeof j.token === "string") {
        return j as LockInfo;
      }
    } catch {
      // fall through and retry
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return "malformed";
}

/** A held lock. */
export class RunLock {
  private released = false;
  constructor(readonly path: string, readonly info: LockInfo) {}

  /** Remove the lock if it is still ours, synchronously (for a signal handler). */
  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    try {
      const cur = JSON.parse(Deno.readTextFileSync(this.path));
      if (cur.token === this.info.token) Deno.removeSync(this.path);
    } catch {
      // gone or unreadable: nothing of ours to remove
    }
  }

  /** Remove the lock if it is still ours. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const cur = await readLock(this.path).catch(() => null);
    if (cur && cur !== "malformed" && cur.token === this.info.token) {
      await Deno.remove(this.path).catch(() => {});
    }
  }
}

export interface AcquireOptions {
  /** What the run is doing (recorded for whoever finds the lock). */
  command: string;
  /** Called with a notice when a stale lock is taken over. */
  onNotice?: (message: string) => void;
}

/** Take the lock of run directory `dir` (which must exist); throws MonobenchError when it is held. */
export async function acquireRunLock(dir: string, opts: AcquireOptions): Promise<RunLock> {
  const path = join(dir, LOCK_FILE);
  const info: LockInfo = {
    pid: Deno.pid,
    hostname: hostname(),
    startedAt: new Date().toISOString(),
    command: opts.command,
    procStart: procStart(Deno.pid),
    token: crypto.randomUUID(),
  };
  for (let attempt = 0; attempt < 5; attempt++) {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { write: true, createNew: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) {
        throw new MonobenchError(
          `cannot create the run lock in ${dir}: ${(e as Error).message}`,
          "choose a directory you can write to with --out",
        );
      }
      const held = await readLock(path);
      if (held === null) continue; // released meanwhile: try again
      if (held === "malformed") {
        throw new MonobenchError(
          `${path} exists but is not a monobench lock`,
          `if no monobench run is using ${dir}, delete ${path}`,
        );
      }
      const alive = held.hostname === info.hostname
        ? await processAlive(held.pid, held.procStart)
        : "unknown";
      if (alive !== false) {
        throw new MonobenchError(
          `${dir} is in use by another monobench run (${describe(held)})`,
          held.hostname === info.hostname && alive === true
            ? "wait for it to finish, or choose another --out"
            : `if that run is no longer running, delete ${path}; or choose another --out`,
        );
      }
      // Stale: move it aside, and make sure what we moved is the lock we judged stale.
      const aside = join(dir, `.${LOCK_FILE}.stale-${Deno.pid}-${info.token.slice(0, 8)}.tmp`);
      try {
        await Deno.rename(path, aside);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue;
        throw e;
      }
      const moved = await readLock(aside);
      if (moved && moved !== "malformed" && moved.token !== held.token) {
        // Another run took the stale lock over in between: give its lock back, and refuse.
        await Deno.link(aside, path).catch(() => {});
        await Deno.remove(aside).catch(() => {});
        throw new MonobenchError(`${dir} is in use by another monobench run (${describe(moved)})`);
      }
      await Deno.remove(aside).catch(() => {});
      opts.onNotice?.(`took over the stale lock of a run that is no longer running (${describe(held)})`);
      continue;
    }
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(info) + "\n");
      for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
    } catch (e) {
      f.close();
      await Deno.remove(path).catch(() => {});
      throw new MonobenchError(`cannot write the run lock ${path}: ${(e as Error).message}`);
    } finally {
      try {
        f.close();
      } catch {
        // already closed
      }
    }
    return new RunLock(path, info);
  }
  throw new MonobenchError(`cannot take the lock of ${dir}: it keeps changing hands`, "try again");
}
