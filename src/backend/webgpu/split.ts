/**
 * Binding splits: the one place that knows the storage-binding limits. A tensor is one GPU buffer
 * (up to maxBufferSize), but a storage binding may cover at most maxStorageBufferBindingSize bytes
 * (128 MiB on Mesa) starting at an aligned offset, so ops bind ranges of tensors and loop over
 * chunks: element ranges, row ranges, latent segments. Every kernel index is then offset by the
 * range's `base`. Arguments bound whole (CSR arrays, masks, per-row or per-latent vectors) must
 * fit in one binding; {@link Split.whole} says so clearly otherwise.
 */
import { MonobenchError } from "../../util/errors.ts";

/** A range of a buffer bound to one storage binding. `base` = element offset of the requested
 * start inside the binding (the binding offset is aligned down to the device's alignment). */
export interface Range {
  readonly buffer: GPUBuffer;
  readonly offset: number;
  readonly size: number;
  readonly base: number;
}

/** A piece of a Matryoshka group interval: latents [lo, hi) of group g. */
export interface Segment {
  g: number;
  lo: number;
  hi: number;
}

/** Split [0, n) into [start, count] pieces of at most `per`. */
export function chunks(n: number, per: number): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 0; s < n; s += per) out.push([s, Math.min(per, n - s)]);
  return out;
}

/** Latent segments: each group interval split into pieces of at most `per` latents. */
export function segments(groups: number[], per: number, keepEmpty: boolean): Segment[] {
  const out: Segment[] = [];
  let lo = 0;
  groups.forEach((hi, g) => {
    if (hi === lo && keepEmpty) out.push({ g, lo, hi });
    for (let s = lo; s < hi; s += per) out.push({ g, lo: s, hi: Math.min(s + per, hi) });
    lo = hi;
  });
  return out;
}

export class Split {
  /** Bytes usable from any start offset: the limit less one alignment step and a vec4. */
  private readonly usable: number;

  constructor(
    /** Storage-binding offset alignment (bytes). */
    readonly align: number,
    /** Largest storage binding (bytes). */
    readonly maxBind: number,
    private readonly dummyBuf: GPUBuffer,
    private readonly dummySlot: number,
  ) {
    this.usable = maxBind - align - 16;
  }

  /** Range of `count` 4-byte elements starting at element `start` of `buffer` (`vec4`: the size
   * is rounded up to 16 bytes, for array<vec4<f32>> bindings). */
  range(buffer: GPUBuffer, start: number, count: number, vec4 = false): Range {
    const startB = start * 4;
    const offset = Math.floor(startB / this.align) * this.align;
    const q = vec4 ? 16 : 4;
    let size = Math.max(q, Math.ceil((startB + count * 4 - offset) / q) * q);
    if (offset + size > buffer.size) size = buffer.size - offset;
    if (size <= 0 || size > this.maxBind) {
      throw new Error(`webgpu: internal error: binding of ${size} bytes (limit ${this.maxBind})`);
    }
    return { buffer, offset, size, base: (startB - offset) / 4 };
  }

  /** The small buffer bound where an optional argument is absent. */
  dummy(): Range {
    return { buffer: this.dummyBuf, offset: 0, size: this.dummySlot, base: 0 };
  }

  /** Whether `n` elements fit in one binding from any start. */
  fits(n: number): boolean {
    return n * 4 <= this.usable;
  }

  /** Bind the first n elements of `buffer` in one binding, or throw a clear error. */
  whole(buffer: GPUBuffer, n: number, what: string, vec4 = false): Range {
    if (!this.fits(n)) {
      throw new MonobenchError(
        `webgpu: ${what} has ${n} elements (${n * 4} bytes), more than fits in one storage binding ` +
          `(${this.maxBind} bytes)`,
        "reduce the batch size / code capacity, or use --backend cpu",
      );
    }
    return this.range(buffer, 0, n, vec4);
  }

  /**
   * Largest number of rows of `rowElems` elements that fit in one binding (any start offset).
   * Throws a clear error when a single row does not fit.
   */
  rowsPerBinding(rowElems: number, what: string): number {
    const r = Math.floor(this.usable / Math.max(1, rowElems * 4));
    if (r < 1) {
      throw new Error(
        `webgpu: one row of ${what} (${rowElems} elements) exceeds the max storage binding size ` +
          `(${this.maxBind} bytes)`,
      );
    }
    return r;
  }

  /** Elements per chunk of element-wise ops (a multiple of 4, for vec4 views). */
  elemsPerBinding(): number {
    return Math.floor(this.usable / 16) * 4;
  }

  /** Elements of a partial-sums buffer that fit in one binding. */
  partCap(): number {
    return Math.floor(this.usable / 4);
  }
}
