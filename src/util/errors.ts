/**
 * A user-facing error: bad input (missing file, wrong shape, NaN, malformed file) or a bad
 * option. The CLI prints `message` (and `hint`) without a stack trace and exits with code 2.
 */
export class MonobenchError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = "MonobenchError";
  }
}

/** Throw a MonobenchError unless `cond` holds. */
export function check(cond: unknown, message: string, hint?: string): asserts cond {
  if (!cond) throw new MonobenchError(message, hint);
}

/** Throw a MonobenchError naming the first non-finite element of `a`, if any. */
export function checkFinite(a: ArrayLike<number>, what: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      throw new MonobenchError(`${what}: non-finite value ${a[i]} at element ${i}`);
    }
  }
}

/**
 * OS error codes that describe the user's environment (full or read-only disk, missing
 * permission, a path through a file), not a bug: reported as bad input, never as a crash.
 */
const ENVIRONMENT_CODES = new Set([
  "ENOSPC",
  "EDQUOT",
  "EROFS",
  "EACCES",
  "EPERM",
  "EIO",
  "ENOTDIR",
  "EISDIR",
  "ENAMETOOLONG",
  "EMFILE",
  "ENFILE",
  "ELOOP",
]);

/** The OS error code of an I/O error from Deno (e.g. "ENOSPC"), or null. */
export function ioErrorCode(e: unknown): string | null {
  if (!(e instanceof Error)) return null;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string" && ENVIRONMENT_CODES.has(code)) return code;
  if (e instanceof Deno.errors.PermissionDenied) return "EACCES";
  if (e instanceof Deno.errors.NotADirectory) return "ENOTDIR";
  if (e instanceof Deno.errors.IsADirectory) return "EISDIR";
  return null;
}

const IO_HINTS: Record<string, string> = {
  ENOSPC: "free disk space, then rerun the same command: finished work is kept and resumed",
  EDQUOT: "free space in your quota, then rerun the same command: finished work is kept and resumed",
  EROFS: "the file system is read-only; choose a writable directory",
  EACCES: "check the permissions, or choose a directory you can write to",
  EPERM: "check the permissions, or choose a directory you can write to",
};

/**
 * Wrap an I/O error from the environment as a MonobenchError (`what` says what was being done);
 * anything else is returned unchanged.
 */
export function asIoError(e: unknown, what: string): unknown {
  if (e instanceof MonobenchError) return e;
  const code = ioErrorCode(e);
  if (!code) return e;
  return new MonobenchError(`${what}: ${(e as Error).message}`, IO_HINTS[code]);
}
