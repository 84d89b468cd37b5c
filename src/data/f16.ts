/**
 * IEEE-754 binary16 ("half") conversion, bit-exact: float32 → float16 rounds to nearest, ties to
 * even, with gradual underflow (subnormals) like a hardware conversion; float16 → float32 is exact.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Bits of the binary16 nearest to `x` (which is first rounded to float32, as stored in a
 * Float32Array). Overflow gives ±Infinity (0x7c00 / 0xfc00), NaN gives a quiet NaN (0x7e00).
 */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  return bitsToHalf(u32[0]);
}

function bitsToHalf(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? 0x7e00 : sign | 0x7c00;
  const e = exp - 112; // rebiased exponent (127 − 15)
  if (e >= 31) return sign | 0x7c00;
  if (e >= 1) {
    // Normal: keep 10 mantissa bits, round the 13 dropped bits to nearest even. A carry out of
    // the mantissa correctly bumps the exponent (up to 0x7c00 = Infinity).
    let h = sign | (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
    return h;
  }
  // Subnormal or zero: value = m · 2^(exp − 150) with m the 24-bit significand; in units of the
  // smallest subnormal 2^-24 that is m >> (126 − exp).
  const shift = 126 - exp; // ≥ 14
  if (shift > 24) return sign; // < 2^-25: rounds to ±0
  const m = exp === 0 ? mant : mant | 0x800000; // float32 subnormals are < 2^-126: all round to 0
  let h = m >>> shift;
  const rem = m - (h << shift);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (h & 1) !== 0)) h++;
  return sign | h;
}

/** Convert a Float32Array to binary16 bits (see {@link f32ToF16Bits}). */
export function f32ToF16Array(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) dst[i] = bitsToHalf(bits[i]);
  return dst;
}

let table: Float32Array | null = null;

/** Lookup table: float32 value of every binary16 bit pattern. */
function f16Table(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    let v: number;
    if (e === 0) v = m * 2 ** -24;
    else if (e === 31) v = m === 0 ? Infinity : NaN;
    else v = (1 + m / 1024) * 2 ** (e - 15);
    table[h] = s * v;
  }
  return table;
}

/** The float32 value of binary16 bits `h`. */
export function f16BitsToF32(h: number): number {
  return f16Table()[h & 0xffff];
}

/** Convert binary16 bits to float32 values. */
export function f16ToF32Array(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const t = f16Table();
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
  return dst;
}

/** Largest finite binary16 value. */
export const F16_MAX = 65504;
