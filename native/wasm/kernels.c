/*
 * WebAssembly SIMD128 kernels of the multi-threaded CPU backend (src/backend/mt.ts).
 *
 * Every kernel computes one slice [lo, hi) of an op (rows, latents, columns or elements) on
 * arrays in one shared linear memory, so the main thread and every worker run the same code on
 * the same tensors. Built by `deno task build:wasm` (tools/build_wasm.ts) into
 * src/backend/wasm/kernels_wasm.ts; users never need the toolchain.
 *
 * Rules that keep the module safe to run on several threads at once: no static data, no libc,
 * no address-taken locals (so no use of the shadow stack, which all instances would share).
 * The build checks the stack pointer is never touched.
 *
 * Arithmetic is float32 (the TypeScript reference accumulates some sums in float64), so results
 * match the reference to rounding, not bit for bit.
 */
#include <stdint.h>
#include <wasm_simd128.h>

typedef float f32;
typedef double f64;
typedef uint32_t u32;
typedef v128_t v4;

#define EXPORT(name) __attribute__((export_name(#name)))

static inline v4 ld(const f32* p) { return wasm_v128_load(p); }
static inline void st(f32* p, v4 v) { wasm_v128_store(p, v); }
static inline v4 splat(f32 x) { return wasm_f32x4_splat(x); }
static inline v4 add(v4 a, v4 b) { return wasm_f32x4_add(a, b); }
static inline v4 sub(v4 a, v4 b) { return wasm_f32x4_sub(a, b); }
static inline v4 mul(v4 a, v4 b) { return wasm_f32x4_mul(a, b); }
/* a + b * c (two roundings: 128-bit WebAssembly SIMD has no fused multiply-add) */
static inline v4 madd(v4 a, v4 b, v4 c) { return wasm_f32x4_add(a, wasm_f32x4_mul(b, c)); }
static inline f32 hsum(v4 v) {
  return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) +
         (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}
static inline f64 hsum2(v4 v) { return wasm_f64x2_extract_lane(v, 0) + wasm_f64x2_extract_lane(v, 1); }
/* Squares of four floats added into two float64x2 accumulators. */
static inline void sq_acc(v4 x, v4* a, v4* b) {
  v4 lo = wasm_f64x2_promote_low_f32x4(x);
  v4 hi = wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(x, x, 2, 3, 0, 1));
  *a = wasm_f64x2_add(*a, wasm_f64x2_mul(lo, lo));
  *b = wasm_f64x2_add(*b, wasm_f64x2_mul(hi, hi));
}

/* ---- element-wise ---------------------------------------------------------------------------- */

/* P[i] = P[i] > 0 ? P[i] : 0 (NaN and -0 become +0, as the reference). */
EXPORT(relu) void relu(f32* P, u32 lo, u32 hi) {
  v4 z = splat(0);
  u32 i = lo;
  for (; i + 16 <= hi; i += 16) {
    v4 a = ld(P + i), b = ld(P + i + 4), c = ld(P + i + 8), d = ld(P + i + 12);
    st(P + i, wasm_v128_and(a, wasm_f32x4_gt(a, z)));
    st(P + i + 4, wasm_v128_and(b, wasm_f32x4_gt(b, z)));
    st(P + i + 8, wasm_v128_and(c, wasm_f32x4_gt(c, z)));
    st(P + i + 12, wasm_v128_and(d, wasm_f32x4_gt(d, z)));
  }
  for (; i < hi; i++) P[i] = P[i] > 0 ? P[i] : 0;
}

/* xc rows [lo, hi) = X − bd. */
EXPORT(center) void center(const f32* X, const f32* bd, f32* xc, u32 d, u32 lo, u32 hi) {
  for (u32 b = lo; b < hi; b++) {
    const f32* x = X + b * d;
    f32* o = xc + b * d;
    u32 i = 0;
    for (; i + 4 <= d; i += 4) st(o + i, sub(ld(x + i), ld(bd + i)));
    for (; i < d; i++) o[i] = x[i] - bd[i];
  }
}

/* P rows [lo, hi) = be (before a GEMM that accumulates into them). */
EXPORT(bcast_rows) void bcast_rows(f32* P, const f32* be, u32 w, u32 lo, u32 hi) {
  for (u32 b = lo; b < hi; b++) __builtin_memcpy(P + b * w, be, w * 4);
}

/* Σ t[i]² over [lo, hi), in float64. */
EXPORT(sumsq) f64 sumsq(const f32* t, u32 lo, u32 hi) {
  v4 a = wasm_f64x2_splat(0), b = a, c = a, d = a;
  u32 i = lo;
  for (; i + 8 <= hi; i += 8) {
    sq_acc(ld(t + i), &a, &b);
    sq_acc(ld(t + i + 4), &c, &d);
  }
  f64 s = hsum2(wasm_f64x2_add(wasm_f64x2_add(a, b), wasm_f64x2_add(c, d)));
  for (; i < hi; i++) s += (f64)t[i] * (f64)t[i];
  return s;
}

/* torch.optim.Adam on [lo, hi): grad scaled by `scale` (the clip factor). */
EXPORT(adam) void adam(f32* p, const f32* g, f32* M, f32* V, u32 lo, u32 hi, f32 scale, f32 beta1,
                       f32 beta2, f32 stepSize, f32 sq2, f32 eps) {
  const f32 c1 = 1 - beta1, c2 = 1 - beta2, inv = 1 / sq2;
  v4 vs = splat(scale), vb1 = splat(beta1), vc1 = splat(c1), vb2 = splat(beta2), vc2 = splat(c2);
  v4 vst = splat(stepSize), vinv = splat(inv), veps = splat(eps);
  u32 i = lo;
  for (; i + 4 <= hi; i += 4) {
    v4 gi = mul(ld(g + i), vs);
    v4 m = madd(mul(vb1, ld(M + i)), vc1, gi);
    v4 v = madd(mul(vb2, ld(V + i)), mul(vc2, gi), gi);
    st(M + i, m);
    st(V + i, v);
    v4 den = madd(veps, wasm_f32x4_sqrt(v), vinv);
    st(p + i, sub(ld(p + i), wasm_f32x4_div(mul(vst, m), den)));
  }
  for (; i < hi; i++) {
    f32 gi = g[i] * scale;
    f32 m = beta1 * M[i] + c1 * gi;
    f32 v = beta2 * V[i] + c2 * gi * gi;
    M[i] = m;
    V[i] = v;
    p[i] -= stepSize * m / (__builtin_sqrtf(v) * inv + eps);
  }
}

/* ---- per-row dense ops ----------------------------------------------------------------------- */

static inline f32 dot(const f32* a, const f32* b, u32 n) {
  v4 s0 = splat(0), s1 = s0, s2 = s0, s3 = s0;
  u32 i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = madd(s0, ld(a + i), ld(b + i));
    s1 = madd(s1, ld(a + i + 4), ld(b + i + 4));
    s2 = madd(s2, ld(a + i + 8), ld(b + i + 8));
    s3 = madd(s3, ld(a + i + 12), ld(b + i + 12));
  }
  for (; i + 4 <= n; i += 4) s0 = madd(s0, ld(a + i), ld(b + i));
  f32 s = hsum(add(add(s0, s1), add(s2, s3)));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* G row −= (G·W / W·W) W for rows [lo, hi) (rows with W = 0 unchanged); returns Σ G² after. */
EXPORT(project) f64 project(const f32* W, f32* G, u32 d, u32 lo, u32 hi) {
  f64 total = 0;
  for (u32 j = lo; j < hi; j++) {
    const f32* w = W + j * d;
    f32* g = G + j * d;
    f32 nn = dot(w, w, d), dp = dot(w, g, d);
    if (nn == 0) {
      total += (f64)dot(g, g, d);
      continue;
    }
    f32 c = dp / nn;
    v4 vc = splat(c), a = wasm_f64x2_splat(0), b = a;
    u32 i = 0;
    for (; i + 4 <= d; i += 4) {
      v4 x = sub(ld(g + i), mul(vc, ld(w + i)));
      st(g + i, x);
      sq_acc(x, &a, &b);
    }
    f64 s = hsum2(wasm_f64x2_add(a, b));
    for (; i < d; i++) {
      g[i] -= c * w[i];
      s += (f64)g[i] * (f64)g[i];
    }
    total += s;
  }
  return total;
}

/* Rows [lo, hi) of W scaled to unit norm (zero rows unchanged). */
EXPORT(renorm) void renorm(f32* W, u32 d, u32 lo, u32 hi) {
  for (u32 j = lo; j < hi; j++) {
    f32* w = W + j * d;
    f32 nn = dot(w, w, d);
    if (nn == 0) continue;
    f32 s = 1 / __builtin_sqrtf(nn);
    v4 vs = splat(s);
    u32 i = 0;
    for (; i + 4 <= d; i += 4) st(w + i, mul(ld(w + i), vs));
    for (; i < d; i++) w[i] *= s;
  }
}

/* ---- selection ------------------------------------------------------------------------------- */

/* Order-preserving key of float bits (as cpu.ts orderedKey), four at a time. */
static inline v4 keys4(v4 b) {
  return wasm_v128_xor(b, wasm_v128_or(wasm_i32x4_shr(b, 31), wasm_u32x4_splat(0x80000000u)));
}
static inline u32 key1(u32 b) { return (b & 0x80000000u) ? ~b : (b | 0x80000000u); }

/*
 * One selection pass over bits[lo, hi): the position and key of every element whose key is at
 * least loKey, in position order, to pos/keys (at most `room`; *cnt = how many, or room + 1 on
 * overflow).
 */
EXPORT(collect_above) void collect_above(const u32* bits, u32 lo, u32 hi, u32 loKey, u32* pos, u32* keys,
                                         u32 room, u32* cnt) {
  v4 vlo = wasm_u32x4_splat(loKey);
  u32 m = 0, i = lo;
  for (; i + 16 <= hi; i += 16) {
    v4 a = keys4(wasm_v128_load(bits + i)), b = keys4(wasm_v128_load(bits + i + 4));
    v4 c = keys4(wasm_v128_load(bits + i + 8)), d = keys4(wasm_v128_load(bits + i + 12));
    v4 any = wasm_v128_or(wasm_v128_or(wasm_u32x4_ge(a, vlo), wasm_u32x4_ge(b, vlo)),
                          wasm_v128_or(wasm_u32x4_ge(c, vlo), wasm_u32x4_ge(d, vlo)));
    if (!wasm_v128_any_true(any)) continue;
    for (u32 t = 0; t < 16; t++) {
      u32 k = key1(bits[i + t]);
      if (k < loKey) continue;
      if (m < room) {
        pos[m] = i + t;
        keys[m] = k;
      }
      m++;
    }
  }
  for (; i < hi; i++) {
    u32 k = key1(bits[i]);
    if (k < loKey) continue;
    if (m < room) {
      pos[m] = i;
      keys[m] = k;
    }
    m++;
  }
  *cnt = m > room ? room + 1 : m;
}

/*
 * Gather of rows [lo, hi) of v [·, w] (cpu.ts `gather` semantics) into idx/val from entry e0, at
 * most up to `end` (entries past it are counted, not stored); cnt[row] = kept entries. `t` holds
 * the scalar threshold at t[slot] (scalar ≠ 0) or one per row; mask (0 = none) marks eligible
 * columns. Returns the entry count written or counted.
 */
EXPORT(gather_rows) u32 gather_rows(const f32* v, u32 w, u32 lo, u32 hi, const f32* t, u32 slot, u32 scalar,
                                    u32 strict, const u32* mask, u32* idx, f32* val, u32 e0, u32 end,
                                    u32* cnt) {
  u32 e = e0;
  for (u32 b = lo; b < hi; b++) {
    f32 tb = scalar ? t[slot] : t[b];
    u32 start = e;
    if (tb == tb) {
      f32 lo2 = tb > 0 ? tb : 0;
      u32 sl = strict || !(tb > 0);
      v4 vl = splat(lo2);
      const f32* r = v + b * w;
      u32 j = 0;
      for (; j + 4 <= w; j += 4) {
        v4 x = ld(r + j);
        v4 keep = sl ? wasm_f32x4_gt(x, vl) : wasm_f32x4_ge(x, vl);
        if (mask) keep = wasm_v128_and(keep, wasm_i32x4_ne(wasm_v128_load(mask + j), wasm_i32x4_splat(0)));
        u32 bm = wasm_i32x4_bitmask(keep);
        while (bm) {
          u32 l = __builtin_ctz(bm);
          bm &= bm - 1;
          if (e < end) {
            idx[e] = j + l;
            val[e] = r[j + l];
          }
          e++;
        }
      }
      for (; j < w; j++) {
        f32 x = r[j];
        if (sl ? !(x > lo2) : !(x >= lo2)) continue;
        if (mask && !mask[j]) continue;
        if (e < end) {
          idx[e] = j;
          val[e] = x;
        }
        e++;
      }
    }
    cnt[b] = e - start;
  }
  return e - e0;
}

/* ---- sparse decoder ---------------------------------------------------------------------------- */

/* o[0, d) += x0 · r0 + x1 · r1 (r1 may be 0: one row). */
static inline void axpy2(f32* o, f32 x0, const f32* r0, f32 x1, const f32* r1, u32 d) {
  v4 v0 = splat(x0), v1 = splat(x1);
  u32 i = 0;
  if (r1) {
    for (; i + 8 <= d; i += 8) {
      st(o + i, add(ld(o + i), add(mul(v0, ld(r0 + i)), mul(v1, ld(r1 + i)))));
      st(o + i + 4, add(ld(o + i + 4), add(mul(v0, ld(r0 + i + 4)), mul(v1, ld(r1 + i + 4)))));
    }
    for (; i + 4 <= d; i += 4) st(o + i, add(ld(o + i), add(mul(v0, ld(r0 + i)), mul(v1, ld(r1 + i)))));
    for (; i < d; i++) o[i] += x0 * r0[i] + x1 * r1[i];
  } else {
    for (; i + 8 <= d; i += 8) {
      st(o + i, madd(ld(o + i), v0, ld(r0 + i)));
      st(o + i + 4, madd(ld(o + i + 4), v0, ld(r0 + i + 4)));
    }
    for (; i + 4 <= d; i += 4) st(o + i, madd(ld(o + i), v0, ld(r0 + i)));
    for (; i < d; i++) o[i] += x0 * r0[i];
  }
}

/*
 * Sparse decode of rows [lo, hi) with nested prefixes: for group g, o[g, b] = init + Σ over the
 * row's entries with idx < groups[g] of val · W[idx]. init: bd (bd ≠ 0), else the current o row
 * of group 0 (accumulate ≠ 0), else 0. Entries at or past `cap` are ignored. Each W row is read
 * whole (a sequential stream) into the output row, which stays in L1.
 */
EXPORT(decode) void decode(const u32* rp, const u32* idx, const f32* val, const f32* W, f32* o, const f32* bd,
                           u32 accumulate, const u32* groups, u32 G, u32 B, u32 d, u32 cap, u32 lo,
                           u32 hi) {
  for (u32 b = lo; b < hi; b++) {
    u32 e = rp[b], e1 = rp[b + 1];
    if (e > cap) e = cap;
    if (e1 > cap) e1 = cap;
    f32* prev = 0;
    for (u32 g = 0; g < G; g++) {
      f32* og = o + (g * B + b) * d;
      if (prev) __builtin_memcpy(og, prev, d * 4);
      else if (bd) __builtin_memcpy(og, bd, d * 4);
      else if (!accumulate) __builtin_memset(og, 0, d * 4);
      for (; e + 1 < e1 && idx[e + 1] < groups[g]; e += 2) {
        axpy2(og, val[e], W + idx[e] * d, val[e + 1], W + idx[e + 1] * d, d);
      }
      if (e < e1 && idx[e] < groups[g]) {
        axpy2(og, val[e], W + idx[e] * d, 0, 0, d);
        e++;
      }
      prev = og;
    }
  }
}

/*
 * Rows [lo, hi): out[e] (+)= gS[g(idx_e), b] · W[idx_e] for the row's entries (before `cap`),
 * g(j) the group interval of latent j.
 */
EXPORT(decode_backward) void decode_backward(const u32* rp, const u32* idx, const f32* gS, const f32* W,
                                             f32* out, u32 accumulate, const u32* groups, u32 B, u32 d,
                                             u32 cap, u32 lo, u32 hi) {
  for (u32 b = lo; b < hi; b++) {
    u32 e0 = rp[b], e1 = rp[b + 1], g = 0;
    if (e0 > cap) e0 = cap;
    if (e1 > cap) e1 = cap;
    for (u32 e = e0; e < e1; e++) {
      u32 j = idx[e];
      while (j >= groups[g]) g++;
      f32 s = dot(gS + (g * B + b) * d, W + j * d, d);
      out[e] = accumulate ? out[e] + s : s;
    }
  }
}

/* o[0, d) += g0 · (x0 − c) + g1 · (x1 − c) (c may be 0; x1 may be 0: one row). */
static inline void axpy2c(f32* o, f32 g0, const f32* x0, f32 g1, const f32* x1, const f32* c, u32 d) {
  if (!c) {
    axpy2(o, g0, x0, g1, x1, d);
    return;
  }
  v4 v0 = splat(g0), v1 = splat(g1);
  u32 i = 0;
  if (x1) {
    for (; i + 4 <= d; i += 4) {
      v4 cc = ld(c + i);
      st(o + i, add(ld(o + i), add(mul(v0, sub(ld(x0 + i), cc)), mul(v1, sub(ld(x1 + i), cc)))));
    }
    for (; i < d; i++) o[i] += g0 * (x0[i] - c[i]) + g1 * (x1[i] - c[i]);
  } else {
    for (; i + 4 <= d; i += 4) st(o + i, madd(ld(o + i), v0, sub(ld(x0 + i), ld(c + i))));
    for (; i < d; i++) o[i] += g0 * (x0[i] - c[i]);
  }
}

/*
 * Latents [lo, hi) with entries (column view cp/row/entry):
 *   gWe[j] += Σ gv[e] · (X[row] − bd)   (bd may be 0: no centring)
 *   gbe[j] += Σ gv[e]                    (gbe may be 0)
 *   gWd[j] += Σ val[e] · gS[g(j), row]   (gWd may be 0)
 * With overwrite ≠ 0, gWe rows are written, not added (0 for latents without entries: spmmT
 * without accumulate). Entries at or past `cap` are skipped. Input rows are read whole (two at a
 * time) into the output rows, which stay in L1.
 */
EXPORT(latent_grads) void latent_grads(const u32* cp, const u32* row, const u32* entry, const f32* gv,
                                       const f32* val, const f32* X, const f32* bd, const f32* gS, f32* gWe,
                                       f32* gbe, f32* gWd, const u32* groups, u32 B, u32 d, u32 cap,
                                       u32 overwrite, u32 lo, u32 hi) {
  u32 g = 0;
  while (lo >= groups[g]) g++;
  for (u32 j = lo; j < hi; j++) {
    while (j >= groups[g]) g++;
    u32 s = cp[j], t = cp[j + 1];
    f32* we = gWe + j * d;
    if (overwrite) __builtin_memset(we, 0, d * 4);
    if (s == t) continue;
    const f32* gsg = gS ? gS + g * B * d : 0;
    f32* wd = gWd ? gWd + j * d : 0;
    f64 sb = 0;
    u32 p = s, have = 0, e0 = 0;
    for (; p < t; p++) {
      u32 e = entry[p];
      if (e >= cap) continue;
      sb += gv[e];
      if (!have) {
        have = 1;
        e0 = p;
        continue;
      }
      u32 pa = e0, ea = entry[pa];
      axpy2c(we, gv[ea], X + row[pa] * d, gv[e], X + row[p] * d, bd, d);
      if (wd) axpy2(wd, val[ea], gsg + row[pa] * d, val[e], gsg + row[p] * d, d);
      have = 0;
    }
    if (have) {
      u32 ea = entry[e0];
      axpy2c(we, gv[ea], X + row[e0] * d, 0, 0, bd, d);
      if (wd) axpy2(wd, val[ea], gsg + row[e0] * d, 0, 0, d);
    }
    if (gbe) gbe[j] += (f32)sb;
  }
}

/*
 * Columns [lo, hi) of the b_dec gradient: gb (+)= [Σ_b gS[b] if withDecodePath] − Σ_u us[u] · W[uj[u]].
 */
EXPORT(bdec_cols) void bdec_cols(const f32* gS, const f32* W, f32* gb, const u32* uj, const f32* us, u32 nu,
                                 u32 B, u32 d, u32 withDecodePath, u32 accumulate, u32 lo, u32 hi) {
  u32 i = lo;
  for (; i + 16 <= hi; i += 16) {
    v4 a0 = splat(0), a1 = a0, a2 = a0, a3 = a0;
    if (withDecodePath) {
      for (u32 b = 0; b < B; b++) {
        const f32* r = gS + b * d + i;
        a0 = add(a0, ld(r)), a1 = add(a1, ld(r + 4)), a2 = add(a2, ld(r + 8)), a3 = add(a3, ld(r + 12));
      }
    }
    for (u32 u = 0; u < nu; u++) {
      v4 s = splat(us[u]);
      const f32* r = W + uj[u] * d + i;
      a0 = sub(a0, mul(s, ld(r))), a1 = sub(a1, mul(s, ld(r + 4)));
      a2 = sub(a2, mul(s, ld(r + 8))), a3 = sub(a3, mul(s, ld(r + 12)));
    }
    if (accumulate) {
      a0 = add(a0, ld(gb + i)), a1 = add(a1, ld(gb + i + 4));
      a2 = add(a2, ld(gb + i + 8)), a3 = add(a3, ld(gb + i + 12));
    }
    st(gb + i, a0), st(gb + i + 4, a1), st(gb + i + 8, a2), st(gb + i + 12, a3);
  }
  for (; i < hi; i++) {
    f32 a = 0;
    if (withDecodePath) for (u32 b = 0; b < B; b++) a += gS[b * d + i];
    for (u32 u = 0; u < nu; u++) a -= us[u] * W[uj[u] * d + i];
    gb[i] = accumulate ? gb[i] + a : a;
  }
}

/*
 * Reconstruction loss over elements [lo, hi) of x (n elements), G nested prefixes:
 *   gS[g] = Σ_{i ≥ g} c[i] · (xh[i] − x),  returns Σ_g w[g] · (xh[g] − x)²  (c[g] = w[g] · 2/B).
 */
EXPORT(recon) f64 recon(const f32* xh, const f32* X, f32* gS, const f32* w, const f32* c, u32 G, u32 n, u32 lo,
                        u32 hi) {
  v4 l0 = wasm_f64x2_splat(0), l1 = l0;
  u32 i = lo;
  for (; i + 4 <= hi; i += 4) {
    v4 x = ld(X + i), acc = splat(0);
    for (u32 g = G; g-- > 0;) {
      v4 r = sub(ld(xh + g * n + i), x);
      v4 wr = mul(splat(w[g]), mul(r, r));
      l0 = wasm_f64x2_add(l0, wasm_f64x2_promote_low_f32x4(wr));
      l1 = wasm_f64x2_add(l1, wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(wr, wr, 2, 3, 0, 1)));
      acc = madd(acc, splat(c[g]), r);
      st(gS + g * n + i, acc);
    }
  }
  f64 loss = hsum2(wasm_f64x2_add(l0, l1));
  for (; i < hi; i++) {
    f32 acc = 0;
    for (u32 g = G; g-- > 0;) {
      f32 r = xh[g * n + i] - X[i];
      loss += (f64)(w[g] * (r * r));
      acc += c[g] * r;
      gS[g * n + i] = acc;
    }
  }
  return loss;
}

/* ---- dense GEMM ---------------------------------------------------------------------------------- */

/*
 * Panels p in [p0, p1) of op(B) packed for `gemm`: P[p][k][c] = op(B)[k, 8p + c] (zero past N),
 * where op(B) [K, N] is B [N, K] (ldb) read transposed (trans ≠ 0) or B [K, N] (ldb) as stored.
 */
EXPORT(pack8) void pack8(const f32* Bm, u32 ldb, u32 N, u32 K, u32 trans, f32* P, u32 p0, u32 p1) {
  for (u32 p = p0; p < p1; p++) {
    f32* o = P + p * K * 8;
    u32 n = N - p * 8 < 8 ? N - p * 8 : 8;
    if (!trans && n == 8) {
      for (u32 k = 0; k < K; k++) st(o + k * 8, ld(Bm + k * ldb + p * 8)), st(o + k * 8 + 4, ld(Bm + k * ldb + p * 8 + 4));
      continue;
    }
    for (u32 c = 0; c < 8; c++) {
      if (c >= n) {
        for (u32 k = 0; k < K; k++) o[k * 8 + c] = 0;
      } else if (trans) {
        const f32* b = Bm + (p * 8 + c) * ldb;
        for (u32 k = 0; k < K; k++) o[k * 8 + c] = b[k];
      } else {
        for (u32 k = 0; k < K; k++) o[k * 8 + c] = Bm[k * ldb + p * 8 + c];
      }
    }
  }
}

/* Epilogue of one row of a tile: n ≤ 8 columns of C = alpha · acc (+ C) (+ bias), then ReLU. */
static inline v4 fin4(v4 a, v4 valpha, const f32* c, u32 beta, const f32* bias, u32 relu_) {
  a = mul(a, valpha);
  if (beta) a = add(a, ld(c));
  if (bias) a = add(a, ld(bias));
  if (relu_) a = wasm_v128_and(a, wasm_f32x4_gt(a, splat(0)));
  return a;
}
static inline f32 fin1(f32 a, f32 alpha, const f32* c, u32 beta, const f32* bias, u32 relu_) {
  a *= alpha;
  if (beta) a += *c;
  if (bias) a += *bias;
  if (relu_) a = a > 0 ? a : 0;
  return a;
}
static inline void put8(f32* c, v4 lo, v4 hi, u32 n, f32 alpha, u32 beta, const f32* bias, u32 relu_) {
  if (n == 8) {
    v4 va = splat(alpha);
    st(c, fin4(lo, va, c, beta, bias, relu_));
    st(c + 4, fin4(hi, va, c + 4, beta, bias ? bias + 4 : 0, relu_));
    return;
  }
  for (u32 t = 0; t < n; t++) {
    f32 x;
    switch (t) {
      case 0: x = wasm_f32x4_extract_lane(lo, 0); break;
      case 1: x = wasm_f32x4_extract_lane(lo, 1); break;
      case 2: x = wasm_f32x4_extract_lane(lo, 2); break;
      case 3: x = wasm_f32x4_extract_lane(lo, 3); break;
      case 4: x = wasm_f32x4_extract_lane(hi, 0); break;
      case 5: x = wasm_f32x4_extract_lane(hi, 1); break;
      case 6: x = wasm_f32x4_extract_lane(hi, 2); break;
      default: x = wasm_f32x4_extract_lane(hi, 3); break;
    }
    c[t] = fin1(x, alpha, c + t, beta, bias ? bias + t : 0, relu_);
  }
}

/*
 * Rows [lo, hi) of C (ldc) (+)= alpha · op(A) · op(B) [+ bias per column] [then ReLU], with
 * op(A)[i, k] = A[i·sa + k·sk] and op(B) packed by `pack8` into P. beta: 0 overwrite, 1 add.
 * 4 rows × 8 columns per tile (8 accumulators, A broadcast, B from the packed panel); panels in
 * blocks of 8 (196 KB at K = 768, kept in L2) while the rows stream through.
 */
EXPORT(gemm) void gemm(const f32* A, u32 sa, u32 sk, const f32* P, f32* C, u32 ldc, u32 N, u32 K, f32 alpha,
                       u32 beta, const f32* bias, u32 relu_, u32 lo, u32 hi) {
  u32 np = (N + 7) / 8;
  for (u32 pb = 0; pb < np; pb += 8) {
    u32 pe = pb + 8 < np ? pb + 8 : np;
    u32 i = lo;
    for (; i + 4 <= hi; i += 4) {
      const f32 *a0 = A + i * sa, *a1 = a0 + sa, *a2 = a1 + sa, *a3 = a2 + sa;
      for (u32 p = pb; p < pe; p++) {
        const f32* pk = P + p * K * 8;
        v4 c00 = splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
        for (u32 k = 0; k < K; k++) {
          v4 b0 = ld(pk + k * 8), b1 = ld(pk + k * 8 + 4);
          u32 ak = k * sk;
          v4 x = wasm_v128_load32_splat(a0 + ak);
          c00 = madd(c00, x, b0), c01 = madd(c01, x, b1);
          x = wasm_v128_load32_splat(a1 + ak);
          c10 = madd(c10, x, b0), c11 = madd(c11, x, b1);
          x = wasm_v128_load32_splat(a2 + ak);
          c20 = madd(c20, x, b0), c21 = madd(c21, x, b1);
          x = wasm_v128_load32_splat(a3 + ak);
          c30 = madd(c30, x, b0), c31 = madd(c31, x, b1);
        }
        u32 n = N - p * 8 < 8 ? N - p * 8 : 8;
        const f32* bs = bias ? bias + p * 8 : 0;
        f32* c = C + i * ldc + p * 8;
        put8(c, c00, c01, n, alpha, beta, bs, relu_);
        put8(c + ldc, c10, c11, n, alpha, beta, bs, relu_);
        put8(c + 2 * ldc, c20, c21, n, alpha, beta, bs, relu_);
        put8(c + 3 * ldc, c30, c31, n, alpha, beta, bs, relu_);
      }
    }
    for (; i < hi; i++) {
      const f32* a0 = A + i * sa;
      for (u32 p = pb; p < pe; p++) {
        const f32* pk = P + p * K * 8;
        v4 c00 = splat(0), c01 = c00;
        for (u32 k = 0; k < K; k++) {
          v4 x = wasm_v128_load32_splat(a0 + k * sk);
          c00 = madd(c00, x, ld(pk + k * 8)), c01 = madd(c01, x, ld(pk + k * 8 + 4));
        }
        u32 n = N - p * 8 < 8 ? N - p * 8 : 8;
        put8(C + i * ldc + p * 8, c00, c01, n, alpha, beta, bias ? bias + p * 8 : 0, relu_);
      }
    }
  }
}

/* ---- small ops ----------------------------------------------------------------------------------- */

/* t[lo, hi) = value. */
EXPORT(fill_f32) void fill_f32(f32* t, f32 value, u32 lo, u32 hi) {
  if (value == 0 && !__builtin_signbit(value)) {
    __builtin_memset(t + lo, 0, (hi - lo) * 4);
    return;
  }
  v4 v = splat(value);
  u32 i = lo;
  for (; i + 4 <= hi; i += 4) st(t + i, v);
  for (; i < hi; i++) t[i] = value;
}

static inline f32 key_to_float(u32 k) {
  u32 b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  return __builtin_bit_cast(f32, b);
}

/* The r-th largest (1-based) of the m keys c[0, m), which all have top digit `bucket` (reorders c). */
static u32 resolve_low(u32* c, u32 m, u32 r, u32 prefix, u32* hist) {
  for (u32 p = 0; p < 2; p++) {
    u32 shift = p == 0 ? 10 : 0, width = p == 0 ? 11 : 10, mask = (1u << width) - 1;
    __builtin_memset(hist, 0, (mask + 1) * 4);
    for (u32 i = 0; i < m; i++) hist[(c[i] >> shift) & mask]++;
    u32 v = mask;
    for (; v > 0; v--) {
      if (hist[v] >= r) break;
      r -= hist[v];
    }
    prefix |= v << shift;
    if (p == 0) {
      u32 w = 0;
      for (u32 i = 0; i < m; i++)
        if (((c[i] >> shift) & mask) == v) c[w++] = c[i];
      m = w;
    }
  }
  return prefix;
}

/*
 * Per-row k-th largest of v [·, w] (as bits) among the nc columns cols[0, nc) (cols = 0: all w
 * columns), rows [lo, hi), to out (−Infinity where a row has fewer than k of them): radix select
 * on the order-preserving keys, 11 + 11 + 10 bits. scratch: 2048 + nc u32 for this chunk.
 */
EXPORT(row_kth) void row_kth(const u32* bits, u32 w, u32 k, const u32* cols, u32 nc, f32* out, u32* scratch,
                             u32 lo, u32 hi) {
  u32* hist = scratch;
  u32* cand = scratch + 2048;
  u32 n = cols ? nc : w;
  for (u32 b = lo; b < hi; b++) {
    const u32* r = bits + b * w;
    if (k < 1 || k > n) {
      out[b] = __builtin_bit_cast(f32, 0xff800000u);
      continue;
    }
    __builtin_memset(hist, 0, 2048 * 4);
    for (u32 j = 0; j < n; j++) hist[key1(r[cols ? cols[j] : j]) >> 21]++;
    u32 rem = k, top = 2047;
    for (; top > 0; top--) {
      if (hist[top] >= rem) break;
      rem -= hist[top];
    }
    u32 m = 0;
    for (u32 j = 0; j < n; j++) {
      u32 kk = key1(r[cols ? cols[j] : j]);
      if ((kk >> 21) == top) cand[m++] = kk;
    }
    out[b] = key_to_float(resolve_low(cand, m, rem, top << 21, hist));
  }
}

/*
 * AuxK loss (cpu.ts auxLossGrad): e = x − xh, ê = ea, all [B, d]; mean: d floats of scratch.
 * Returns alpha · (1/B) Σ ||e − ê||² / ((1/B) Σ ||e − ē||²), or 0 if not finite, and writes
 * gS = alpha · (−2/B) (e − ê) / den (0 if not finite).
 */
EXPORT(aux_loss) f64 aux_loss(const f32* X, const f32* xh, const f32* ea, f32* gS, u32 B, u32 d, f64 alpha,
                              f32* mean) {
  __builtin_memset(mean, 0, d * 4);
  f64 num = 0, den = 0;
  for (u32 b = 0; b < B; b++) {
    const f32 *x = X + b * d, *h = xh + b * d, *a = ea + b * d;
    f32 s = 0;
    for (u32 i = 0; i < d; i++) {
      f32 e = x[i] - h[i];
      mean[i] += e;
      f32 r = e - a[i];
      s += r * r;
    }
    num += s;
  }
  for (u32 i = 0; i < d; i++) mean[i] /= (f32)B;
  for (u32 b = 0; b < B; b++) {
    const f32 *x = X + b * d, *h = xh + b * d;
    f32 s = 0;
    for (u32 i = 0; i < d; i++) {
      f32 c = x[i] - h[i] - mean[i];
      s += c * c;
    }
    den += s;
  }
  num /= B;
  den /= B;
  f64 loss = alpha * num / den;
  u32 ok = loss - loss == 0;
  f32 sc = ok ? (f32)(alpha * (-2.0 / B) / den) : 0;
  for (u32 b = 0; b < B; b++) {
    const f32 *x = X + b * d, *h = xh + b * d, *a = ea + b * d;
    f32* g = gS + b * d;
    for (u32 i = 0; i < d; i++) g[i] = sc * (x[i] - h[i] - a[i]);
  }
  return ok ? loss : 0;
}

/*
 * Codes [B, w] from the candidates of `collect_above` (T chunks, chunk t at pos + t·room with
 * cnt[t] entries, in position order): entries with v[p] ≥ thr (> thr when strict) and > 0, in
 * row-major order, at most `cap` of them. Writes rp[0, B], idx, val.
 */
EXPORT(csr_from_candidates) void csr_from_candidates(const u32* pos, const u32* cnt, u32 room, u32 T, const f32* v,
                                                     u32 w, u32 B, f32 thr, u32 strict, u32 cap, u32* rp, u32* idx,
                                                     f32* val) {
  u32 e = 0, row = 0;
  rp[0] = 0;
  for (u32 t = 0; t < T; t++) {
    const u32* ps = pos + t * room;
    for (u32 i = 0; i < cnt[t]; i++) {
      u32 p = ps[i];
      f32 x = v[p];
      if (strict ? !(x > thr) : !(x >= thr)) continue;
      if (!(x > 0)) continue;
      u32 b = p / w;
      while (row < b) rp[++row] = e;
      if (e < cap) {
        idx[e] = p - b * w;
        val[e] = x;
        e++;
      }
    }
  }
  while (row < B) rp[++row] = e;
}

/* The r-th largest (1-based) of the m keys c[0, m) (reorders c); hist: 2048 u32 of scratch. */
EXPORT(select_key) u32 select_key(u32* c, u32 m, u32 r, u32* hist) {
  __builtin_memset(hist, 0, 2048 * 4);
  for (u32 i = 0; i < m; i++) hist[c[i] >> 21]++;
  u32 top = 2047;
  for (; top > 0; top--) {
    if (hist[top] >= r) break;
    r -= hist[top];
  }
  u32 n = 0;
  for (u32 i = 0; i < m; i++)
    if ((c[i] >> 21) == top) c[n++] = c[i];
  return resolve_low(c, n, r, top << 21, hist);
}
