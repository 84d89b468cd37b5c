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
