/** Row sketches: what they hold, and which differences they accept. */
import assert from "node:assert/strict";
import { compareSketches, SKETCH_ROWS, storeSketch } from "../src/data/sketch.ts";
import { ActivationStore, writeStore } from "../src/data/store.ts";
import { Rng } from "../src/util/rng.ts";

Deno.test("sketch: Σx, Σ|x|, Σx² of evenly spaced rows, in float64", async () => {
  const n = 40, d = 5;
  const x = new Rng(3).normals(n * d);
  const dir = await Deno.makeTempDir();
  try {
    await writeStore(dir, x, n, d, { shardRows: 7 });
    const s = storeSketch(await ActivationStore.open(dir));
    assert.equal(s.length, 2 + 3 * SKETCH_ROWS);
    assert.deepEqual(s.slice(0, 2), [n, d]);
    for (let j = 0; j < SKETCH_ROWS; j++) {
      const r = Math.floor(((j + 0.5) * n) / SKETCH_ROWS), row = [...x.subarray(r * d, r * d + d)];
      assert.ok(Math.abs(s[2 + 3 * j] - row.reduce((a, v) => a + v, 0)) < 1e-12);
      assert.ok(Math.abs(s[3 + 3 * j] - row.reduce((a, v) => a + Math.abs(v), 0)) < 1e-12);
      assert.ok(Math.abs(s[4 + 3 * j] - row.reduce((a, v) => a + v * v, 0)) < 1e-12);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sketch: float32-rounding differences agree, another row or shape does not", () => {
  const n = 100, d = 64, rng = new Rng(7);
  const x = rng.normals(n * d).map(Math.abs);
  const mk = (v: Float32Array, nn = n) => ({
    n: nn,
    d,
    rows: (r: number, c: number) => v.subarray(r * d, (r + c) * d),
  });
  const base = storeSketch(mk(x));
  // A few ulps on every value (what another CPU's kernels give).
  const y = x.map((v, i) => v * (1 + ((i % 7) - 3) * 1.2e-7));
  const near = compareSketches(base, storeSketch(mk(y)));
  assert.ok(near.same && near.deviation > 0 && near.deviation < 1e-6, String(near.deviation));
  // Another image in one sketched row (row 3 is the first sketched one at n = 100).
  const z = x.slice();
  z.set(rng.normals(d).map(Math.abs), 3 * d);
  const far = compareSketches(base, storeSketch(mk(z)));
  assert.ok(!far.same && far.deviation > 0.01, String(far.deviation));
  assert.equal(compareSketches(base, storeSketch(mk(x.subarray(0, 99 * d), 99))).deviation, Infinity);
  assert.equal(compareSketches(base, [1, 2, 3]).same, false);
  assert.equal(compareSketches(base, base).deviation, 0);
});
