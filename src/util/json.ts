/**
 * JSON for results: JSON has no NaN/±Infinity, so non-finite numbers are written as null (a NaN
 * MS of a dead latent, an undefined R²) and, where results are read back, null becomes NaN.
 */

/** Pretty JSON text with a final newline; non-finite numbers become null. */
export function jsonText(x: unknown): string {
  return JSON.stringify(x, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2) + "\n";
}

/** `JSON.parse` reviver undoing {@link jsonText}: null → NaN. */
export function nullAsNaN(_key: string, value: unknown): unknown {
  return value === null ? NaN : value;
}
