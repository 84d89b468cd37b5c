import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { aggregateCases, curveBand, diffStat, meanInterval, seedOf, stat } from "../src/report/stats.ts";
import { syntheticCase, syntheticMs } from "../src/report/synthetic.ts";
import type { CaseResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { studentTQuantile } from "../src/util/tdist.ts";

/** Student-t quantiles in closed form: df = 1 (Cauchy), 2, and 4. */
const t1 = (p: number) => Math.tan(Math.PI * (p - 0.5));
const t2 = (p: number) => (2 * p - 1) / Math.sqrt(2 * p * (1 - p));
function t4(p: number): number {
  const a = 4 * p * (1 - p);
  const q = Math.cos(Math.acos(Math.sqrt(a)) / 3) / Math.sqrt(a);
  return Math.sign(p - 0.5) * 2 * Math.sqrt(q - 1);
}
const close = (a: number, b: number, tol = 1e-9) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));

Deno.test("stat: Student-t intervals match the closed-form quantiles (df 1, 2, 4)", () => {
  // n = 2: [1, 3], mean 2, s = √2, half = t_{.975,1}·√2/√2
  const s2 = stat([1, 3]);
  equal(s2.mean, 2);
  ok(close(s2.std, Math.SQRT2));
  ok(close(s2.ci95[1] - 2, t1(0.975)) && close(2 - s2.ci95[0], t1(0.975)), String(s2.ci95));
  ok(close(t1(0.975), 12.7062047, 1e-7));
  // n = 3: [1, 2, 4], s = √(7/3)
  const s3 = stat([1, 2, 4]);
  ok(close(s3.ci95[1] - s3.mean, t2(0.975) * Math.sqrt(7 / 3) / Math.sqrt(3)));
  // n = 5, level 0.9 and 0.99 through meanInterval
  const v = [0.1, 0.4, 0.2, 0.5, 0.3];
  const sd = Math.sqrt(0.025);
  for (const level of [0.9, 0.95, 0.99]) {
    const m = meanInterval(v, level);
    ok(close(m.hi - 0.3, t4((1 + level) / 2) * sd / Math.sqrt(5)), `level ${level}`);
    ok(close(m.mean - m.lo, m.hi - m.mean));
  }
  ok(close(t4(0.975), 2.7764451, 1e-7)); // the printed table value
  // Far tails need a bracket wider than any fixed bound: t_{.99999,1} ≈ 31831.
  for (const p of [0.9995, 0.99999, 0.00001]) ok(close(studentTQuantile(p, 1), t1(p), 1e-8), `p ${p}`);
  throws(() => meanInterval(v, 1), MonobenchError);
  throws(() => meanInterval(v, 0), MonobenchError);
});

Deno.test("stat: one seed has no interval; non-finite values are left out", () => {
  const one = stat([0.7]);
  equal(one.mean, 0.7);
  equal(one.n, 1);
  ok(Number.isNaN(one.std) && Number.isNaN(one.ci95[0]) && Number.isNaN(one.ci95[1]));
  const none = stat([NaN]);
  equal(none.n, 0);
  ok(Number.isNaN(none.mean));
  deepStrictEqual(stat([1, NaN, 3, Infinity]), stat([1, 3]));
  // zero spread: a real interval of width 0
  deepStrictEqual(stat([2, 2, 2]).ci95, [2, 2]);
});

Deno.test("diffStat: paired by seed, Welch otherwise, none with too few seeds", () => {
  const sv = (seeds: number[], vals: number[]) => seeds.map((seed, i) => ({ seed, value: vals[i] }));
  // paired: d = [0.5, 0.2, 0.9] (order of the inputs does not matter, the seeds do)
  const p = diffStat(sv([0, 1, 2], [1, 2, 4]), sv([2, 0, 1], [3.1, 0.5, 1.8]));
  equal(p.method, "paired");
  equal(p.n, 3);
  equal(p.df, 2);
  const sd = Math.sqrt(((0.5 - 1.6 / 3) ** 2 + (0.2 - 1.6 / 3) ** 2 + (0.9 - 1.6 / 3) ** 2) / 2);
  ok(close(p.mean, 1.6 / 3) && close(p.hi - p.mean, t2(0.975) * sd / Math.sqrt(3)), JSON.stringify(p));
  // Welch: a = [1,2,3] (var 1), b = [2,4,6,8] (var 20/3); se = √(1/3 + 5/3) = √2
  const w = diffStat(sv([0, 1, 2], [1, 2, 3]), sv([0, 1, 2, 3], [2, 4, 6, 8]));
  equal(w.method, "welch");
  ok(close(w.mean, -3) && close(w.se, Math.SQRT2));
  const df = 4 / ((1 / 9) / 2 + (25 / 9) / 3); // Satterthwaite
  ok(close(w.df, df), `${w.df} vs ${df}`);
  // 4 < df < 5: the half-width lies between t_{.975,5} = 2.5706 and t_{.975,4} = 2.7764 times se
  const half = (w.hi - w.lo) / 2;
  ok(half > 2.5706 * Math.SQRT2 && half < t4(0.975) * Math.SQRT2, String(half));
  // pairing needs the same seeds with finite values on both sides: a NaN on one side only → Welch
  equal(diffStat(sv([0, 1, 2], [1, 2, NaN]), sv([0, 1, 2], [0, 1, 5])).method, "welch");
  equal(diffStat(sv([0, 1, 2], [1, 2, NaN]), sv([0, 1, 2], [0, 1.5, NaN])).method, "paired");
  const none = diffStat(sv([0], [1]), sv([0], [0.5]));
  equal(none.method, "none");
  equal(none.mean, 0.5);
  ok(Number.isNaN(none.lo));
  throws(() => diffStat(sv([0, 0], [1, 2]), sv([0, 1], [1, 2])), MonobenchError);
});

Deno.test("curveBand: curves of different lengths on a common rank grid, pointwise interval", () => {
  const b = curveBand([[1, 0], [0.8, 0.4, 0], [0.9, 0.3, 0]]);
  deepStrictEqual(b.x, [0, 0.5, 1]);
  // [1, 0] resampled to 3 points is [1, 0.5, 0]; middle values .5, .4, .3: mean .4, s .1
  ok(close(b.mean[0], 0.9) && close(b.mean[1], 0.4) && b.mean[2] === 0);
  ok(close(b.hi[1] - 0.4, t2(0.975) * 0.1 / Math.sqrt(3)));
  const one = curveBand([[0.5, 0.2]]);
  deepStrictEqual(one.mean, [0.5, 0.2]);
  ok(one.lo.every(Number.isNaN));
  deepStrictEqual(curveBand([[], []]).x, []);
});

function reps(vals: number[], extra: (i: number) => Partial<CaseResult> = () => ({})): CaseResult[] {
  return vals.map((r2, i) =>
    syntheticCase({
      layer: "22",
      sae: "batchtopk",
      expansion: 2,
      seed: 10 + i,
      r2,
      l0: 19 + i,
      fve: { fve_batchmean: r2 / 100, ...(i === 0 ? { r2_global: 0.5 } : {}) },
      fracAboveRaw: { labels: 0.8 + i / 100 },
      ms: [syntheticMs("labels", 0.2 + i / 10, 0.9), syntheticMs("inceptionv3", 0.5, 0.7 + i / 10)],
      ...extra(i),
    })
  );
}

Deno.test("aggregateCases: one Stat per metric over the seeds of each case", () => {
  const other = syntheticCase({ layer: "last", sae: "matryoshka", expansion: 1, seed: 3 });
  const aggs = aggregateCases([...reps([70, 72, 77]).reverse(), other]);
  deepStrictEqual(aggs.map((a) => a.id), ["batchtopk-22-x2-k20", "matryoshka-last-x1-k20"]);
  const a = aggs[0];
  deepStrictEqual(a.seeds, [10, 11, 12]);
  equal(a.n, 3);
  // R² 70, 72, 77: mean 73, s = √13
  equal(a.r2.mean, 73);
  ok(close(a.r2.std, Math.sqrt(13)));
  ok(close(a.r2.ci95[1] - 73, t2(0.975) * Math.sqrt(13) / Math.sqrt(3)));
  deepStrictEqual([a.l0.mean, a.l0.n], [20, 3]);
  ok(close(a.fracAboveRaw.labels.mean, 0.81));
  equal(a.fve.r2_global.n, 1); // only one replicate has it
  ok(close(a.fve.fve_batchmean.mean, 0.73));
  deepStrictEqual(a.ms.map((m) => m.encoder), ["labels", "inceptionv3"]);
  ok(close(a.ms[0].mean.mean, 0.3) && close(a.ms[1].max.mean, 0.8));
  equal(a.ms[0].count, 100);
  equal(a.ms[0].curve.x.length, 20);
  ok(a.ms[0].curve.lo.every(Number.isFinite));
  equal(aggs[1].n, 1);
  ok(Number.isNaN(aggs[1].r2.ci95[0]));
  // a result without a seed (older reports) counts as seed 0
  const legacy = { ...other } as Partial<CaseResult>;
  delete legacy.seed;
  equal(seedOf(legacy as CaseResult), 0);
  deepStrictEqual(aggregateCases([legacy as CaseResult])[0].seeds, [0]);
});

Deno.test("aggregateCases: a repeated seed or a mismatched configuration is refused", () => {
  const r = reps([70, 72]);
  throws(
    () => aggregateCases([...r, { ...r[0] }]),
    (e) => e instanceof MonobenchError && /seed 10/.test(e.message),
  );
  throws(
    () => aggregateCases([r[0], { ...r[1], steps: 999 }]),
    (e) => e instanceof MonobenchError && /steps/.test(e.message),
  );
  throws(() => aggregateCases([r[0], { ...r[1], k: 10 }]), MonobenchError);
});
