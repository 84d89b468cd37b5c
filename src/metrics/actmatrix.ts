/**
 * Helpers for {@link ActMatrix} shared by the metrics: shape / value validation and a
 * column-major (CSC) view of a CSR matrix.
 */
import type { ActMatrix } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0;
}

/**
 * Validate an activation matrix: integer shape, array lengths, finite values, and for CSR a
 * well-formed row pointer (starts at 0, non-decreasing, within `idx`/`val`) and strictly
 * ascending in-range column indices in every row. Throws {@link MonobenchError}.
 * Returns the number of stored entries (n·cols for dense, nnz for CSR).
 */
export function checkActMatrix(acts: ActMatrix, what = "activations"): number {
  check(acts !== null && typeof acts === "object", `${what}: expected an ActMatrix object`);
  check(isCount(acts.n), `${what}: n must be a non-negative integer (got ${acts.n})`);
  check(isCount(acts.cols), `${what}: cols must be a non-negative integer (got ${acts.cols})`);
  const { n, cols } = acts;
  if (acts.kind === "dense") {
    check(acts.data instanceof Float32Array, `${what}: dense data must be a Float32Array`);
    check(
      acts.data.length === n * cols,
      `${what}: dense data has ${acts.data.length} values, expected n·cols = ${n}·${cols} = ${n * cols}`,
    );
    const a = acts.data;
    for (let i = 0; i < a.length; i++) {
      if (!Number.isFinite(a[i])) {
        throw new MonobenchError(
          `${what}: non-finite value ${a[i]} at row ${Math.floor(i / cols)}, column ${i % cols}`,
        );
      }
    }
    return n * cols;
  }
  if (acts.kind !== "csr") {
    throw new MonobenchError(
      `${what}: unknown ActMatrix kind ${JSON.stringify((acts as { kind: unknown }).kind)}`,
    );
  }
  const { rowPtr, idx, val } = acts;
  check(rowPtr instanceof Uint32Array, `${what}: csr rowPtr must be a Uint32Array`);
  check(idx instanceof Uint32Array, `${what}: csr idx must be a Uint32Array`);
  check(val instanceof Float32Array, `${what}: csr val must be a Float32Array`);
  check(
    rowPtr.length === n + 1,
    `${what}: csr rowPtr has length ${rowPtr.length}, expected n + 1 = ${n + 1}`,
  );
  check(rowPtr[0] === 0, `${what}: csr rowPtr[0] must be 0 (got ${rowPtr[0]})`);
  const nnz = rowPtr[n];
  check(
    nnz <= idx.length && nnz <= val.length,
    `${what}: csr rowPtr[n] = ${nnz} exceeds idx (${idx.length}) or val (${val.length}) length`,
  );
  for (let r = 0; r < n; r++) {
    if (rowPtr[r + 1] < rowPtr[r]) {
      throw new MonobenchError(`${what}: csr rowPtr decreases at row ${r} (${rowPtr[r]} → ${rowPtr[r + 1]})`);
    }
  }
  for (let r = 0; r < n; r++) {
    const s = rowPtr[r], e = rowPtr[r + 1];
    let prev = -1;
    for (let t = s; t < e; t++) {
      const c = idx[t];
      if (c >= cols) {
        throw new MonobenchError(`${what}: csr column ${c} out of range [0, ${cols}) in row ${r}`);
      }
      if (c <= prev) {
        throw new MonobenchError(
          `${what}: csr columns of row ${r} are not strictly ascending (${prev}, ${c})`,
        );
      }
      prev = c;
      if (!Number.isFinite(val[t])) {
        throw new MonobenchError(`${what}: non-finite value ${val[t]} at row ${r}, column ${c}`);
      }
    }
  }
  return nnz;
}

/** Column-major view of a CSR matrix: column j's entries are `colPtr[j]..colPtr[j+1]`. */
export interface Csc {
  colPtr: Uint32Array; // [cols + 1]
  row: Uint32Array; // [nnz], ascending within a column
  val: Float32Array; // [nnz]
}

/** Transpose a (validated) CSR matrix to CSC by counting sort; rows ascend within a column. */
export function csrToCsc(acts: Extract<ActMatrix, { kind: "csr" }>): Csc {
  const { n, cols, rowPtr, idx, val } = acts;
  const nnz = rowPtr[n];
  const colPtr = new Uint32Array(cols + 1);
  for (let t = 0; t < nnz; t++) colPtr[idx[t] + 1]++;
  for (let j = 0; j < cols; j++) colPtr[j + 1] += colPtr[j];
  const fill = colPtr.slice(0, cols);
  const row = new Uint32Array(nnz);
  const v = new Float32Array(nnz);
  for (let r = 0; r < n; r++) {
    for (let t = rowPtr[r], e = rowPtr[r + 1]; t < e; t++) {
      const p = fill[idx[t]]++;
      row[p] = r;
      v[p] = val[t];
    }
  }
  return { colPtr, row, val: v };
}

/** Value of entry (r, c) of an ActMatrix (0 for an implicit CSR zero). For tests / oracles. */
export function actAt(acts: ActMatrix, r: number, c: number): number {
  if (acts.kind === "dense") return acts.data[r * acts.cols + c];
  let lo = acts.rowPtr[r], hi = acts.rowPtr[r + 1];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const m = acts.idx[mid];
    if (m === c) return acts.val[mid];
    if (m < c) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

/** Dense row-major Float64Array [n·cols] copy of an ActMatrix. For tests / oracles. */
export function toDense64(acts: ActMatrix): Float64Array {
  const { n, cols } = acts;
  const out = new Float64Array(n * cols);
  if (acts.kind === "dense") {
    for (let i = 0; i < out.length; i++) out[i] = acts.data[i];
  } else {
    for (let r = 0; r < n; r++) {
      for (let t = acts.rowPtr[r]; t < acts.rowPtr[r + 1]; t++) out[r * cols + acts.idx[t]] = acts.val[t];
    }
  }
  return out;
}
