/**
 * Atomic file writes: write a temp file in the same directory, then rename it over the target,
 * so that a crash or an error never leaves a half-written file or destroys the previous one.
 */
import { basename, dirname, join } from "node:path";
import { asIoError, MonobenchError } from "../util/errors.ts";

let counter = 0;

/** Write `data` to `path` atomically (temp file + rename); the temp file is removed on failure. */
export async function atomicWrite(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${Deno.pid}.${Date.now()}.${counter++}.tmp`);
  try {
    if (typeof data === "string") await Deno.writeTextFile(tmp, data);
    else await Deno.writeFile(tmp, data);
    await Deno.rename(tmp, path);
  } catch (e) {
    try {
      await Deno.remove(tmp);
    } catch {
      // the temp file may not exist
    }
    const io = asIoError(e, `cannot write ${path}`);
    throw io instanceof MonobenchError
      ? io
      : new MonobenchError(`cannot write ${path}: ${(e as Error).message}`);
  }
}

/** Write several files atomically each; all contents must be rendered before calling. */
export async function atomicWriteAll(files: { path: string; data: string | Uint8Array }[]): Promise<void> {
  for (const f of files) await atomicWrite(f.path, f.data);
}
