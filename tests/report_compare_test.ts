import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { compareVariants, paretoFront, verdictOf } from "../src/report/compare.ts";
import { syntheticCase, syntheticMs } from "../src/report/synthetic.ts";
import type { CaseResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";

const T2 = 0.95 / Math.sqrt(2 * 0.975 * 0.025); // t_{0.975, 2}, closed form
const NOISE = [0.3, -0.1, -0.2]; // per-seed noise shared by variant and reference

/** Three seeds of `sae` at last ×{1, 4}, metrics from `f(eps, seedIndex)`. */
function cases(
  sae: string,
  f: (eps: number, i: number) => Partial<CaseResult>,
  seeds = [0, 1, 2],
): CaseResult[] {
  return seeds.flatMap((seed, i) =>
    [1, 4].map((expansion) => syntheticCase({ layer: "last", sae, expansion, seed, ...f(expansion, i) }))
  );
}

const base = (eps: number, i: number): Partial<CaseResult> => ({
  r2: 70 + eps + NOISE[i],
  l0: 20,
  deadFraction: 0.1,
  ms: [syntheticMs("labels", 0.3 + NOISE[i] / 10, 0.8)],
  fracAboveRaw: { labels: 0.8 },
});

Deno.test("compare: paired differences, intervals and verdicts against two references", () => {
  const bt = cases("batchtopk", base);
  const mt = cases("matryoshka", (e, i) => ({ ...base(e, i), r2: 68 + e + NOISE[i] }));
  // variant: R² +1 (+ small seed-specific part), dead fraction higher, L0 higher, MS equal in mean
  const extra = [0.1, -0.05, 0.05];
  const topk = cases("topk", (e, i) => ({
    ...base(e, i),
    r2: 71 + e + NOISE[i] + extra[i],
    deadFraction: 0.2 + extra[i] / 10,
    l0: 22 + extra[i],
    ms: [syntheticMs("labels", 0.3 + NOISE[i] / 10 + extra[i] / 10, 0.8)],
  }));
  const cmp = compareVariants([...bt, ...mt, ...topk], { variant: "topk" });
  deepStrictEqual(cmp.references, ["batchtopk", "matryoshka"]);
  equal(cmp.level, 0.95);
  deepStrictEqual(cmp.unmatched, []);
  const row = (ref: string, metric: string, eps = 1) =>
    cmp.rows.find((r) => r.reference === ref && r.metric === metric && r.expansion === eps)!;
  // R² vs BatchTopK: d = 1 + extra = [1.1, 0.95, 1.05], paired (the shared noise cancels)
  const r2 = row("batchtopk", "r2");
  equal(r2.diff.method, "paired");
  equal(r2.diff.n, 3);
  const sd = Math.sqrt(((0.1 - 0.1 / 3) ** 2 + (-0.05 - 0.1 / 3) ** 2 + (0.05 - 0.1 / 3) ** 2) / 2);
  ok(Math.abs(r2.diff.mean - (1 + 0.1 / 3)) < 1e-9);
  ok(Math.abs(r2.diff.hi - r2.diff.mean - T2 * sd / Math.sqrt(3)) < 1e-9, JSON.stringify(r2.diff));
  equal(r2.verdict, "better");
  equal(row("matryoshka", "r2").verdict, "better"); // +3
  equal(row("batchtopk", "dead_fraction").verdict, "worse"); // lower is better
  equal(row("batchtopk", "l0").verdict, "higher"); // no good direction at fixed K
  equal(row("batchtopk", "ms_mean").verdict, "indistinguishable"); // mean difference 0.0033 ± 0.019
  equal(row("batchtopk", "ms_mean").source, "labels");
  equal(row("batchtopk", "ms_max").verdict, "indistinguishable"); // identical: [0, 0] excludes nothing
  // summary: per reference × metric × source, over both ε
  const s = cmp.summary.find((x) => x.reference === "batchtopk" && x.metric === "r2")!;
  equal(s.total, 2);
  equal(s.counts.better, 2);
  equal(cmp.rows.length, 2 * 2 * 6); // 2 refs × 2 ε × (ms mean, ms max, frac, r2, l0, dead)
  // the variant's Stat is its own mean over seeds
  ok(Math.abs(r2.variantStat.mean - (71 + 1 + 0 + 0.1 / 3)) < 1e-9);
});

Deno.test("compare: Welch for unequal seeds, one seed is indistinguishable, unmatched cases", () => {
  const bt = cases("batchtopk", base, [0, 1, 2]);
  const v = cases("relu", (e, i) => ({ ...base(e, i), r2: 60 }), [5, 6, 7]);
  const w = compareVariants([...bt, ...v], { variant: "relu", references: ["batchtopk"] });
  const r2 = w.rows.find((r) => r.metric === "r2" && r.expansion === 1)!;
  equal(r2.diff.method, "welch");
  equal(r2.verdict, "worse");
  // one seed each: no interval, so the verdict cannot be better or worse
  const one = compareVariants([...cases("batchtopk", base, [0]), ...cases("relu", base, [0])], {
    variant: "relu",
    references: ["batchtopk"],
  });
  ok(one.rows.every((r) => r.verdict === "indistinguishable" && r.diff.method === "none"));
  // a variant case with no reference at the same layer/ε/K
  const lone = syntheticCase({ layer: "11", sae: "relu", expansion: 8 });
  const u = compareVariants([...bt, ...v, lone], { variant: "relu" });
  deepStrictEqual(u.unmatched, ["relu-11-x8-k20"]);
  deepStrictEqual(u.references, ["batchtopk", "matryoshka"]);
  equal(u.rows.filter((r) => r.reference === "matryoshka").length, 0);
  // a lower level narrows the interval
  const r90 = compareVariants([...bt, ...v], { variant: "relu", level: 0.9 }).rows[0].diff;
  const r95 = compareVariants([...bt, ...v], { variant: "relu" }).rows[0].diff;
  ok(r90.hi - r90.lo < r95.hi - r95.lo);
});

Deno.test("compare: bad options are MonobenchErrors", () => {
  const bt = cases("batchtopk", base);
  throws(
    () => compareVariants(bt, { variant: "nope" }),
    (e) => e instanceof MonobenchError && /batchtopk/.test(e.message),
  );
  throws(() => compareVariants(bt, { variant: "batchtopk", references: ["batchtopk"] }), MonobenchError);
  throws(() => compareVariants(bt, { variant: "batchtopk", references: ["matryoshka"] }), MonobenchError);
  throws(() => compareVariants(bt, { variant: "batchtopk", level: 1.5 }), MonobenchError);
});

Deno.test("verdictOf and paretoFront (hand cases)", () => {
  equal(verdictOf({ lo: 0.1, hi: 0.2 }, "r2"), "better");
  equal(verdictOf({ lo: 0.1, hi: 0.2 }, "dead_fraction"), "worse");
  equal(verdictOf({ lo: -0.2, hi: -0.1 }, "dead_fraction"), "better");
  equal(verdictOf({ lo: -0.1, hi: 0.2 }, "ms_mean"), "indistinguishable");
  equal(verdictOf({ lo: NaN, hi: NaN }, "ms_mean"), "indistinguishable");
  equal(verdictOf({ lo: -0.2, hi: -0.1 }, "l0"), "lower");
  // (x, y): (1, 1) and (2, 0.5) are optimal when x is better higher; (0.5, 0.9) is dominated by (1, 1)
  const pts = [{ x: 1, y: 1 }, { x: 2, y: 0.5 }, { x: 0.5, y: 0.9 }, { x: NaN, y: 5 }, { x: 2, y: 0.5 }];
  deepStrictEqual(paretoFront(pts, "higher"), [0, 1, 4]); // equal points do not dominate each other
  // x better lower: (0.5, 0.9) is now optimal, and (1, 1) too; (2, 0.5) dominated by (1, 1)
  deepStrictEqual(paretoFront(pts, "lower"), [0, 2]);
});
