import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { checkClaims } from "../src/report/claims.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { paperAsResults, syntheticCase, syntheticLayer, syntheticMs } from "../src/report/synthetic.ts";
import type { Claim } from "../src/report/types.ts";
import type { CaseResult } from "../src/types.ts";

const fx = await loadFixtures();
const IDS = [
  "sae-beats-raw",
  "most-latents-above-raw",
  "ms-peaks-at-eps4",
  "best-ms-grows-with-eps",
  "lower-k-higher-ms",
  "matryoshka-r2-lower",
  "l0-near-k",
];

function byId(cs: Claim[]): Record<string, Claim> {
  return Object.fromEntries(cs.map((c) => [c.id, c]));
}

Deno.test("claims: the paper's own numbers pass every checkable claim", () => {
  const { cases, layers } = paperAsResults(fx);
  const cs = checkClaims(cases, layers);
  deepStrictEqual(cs.map((c) => c.id), IDS);
  const c = byId(cs);
  equal(c["sae-beats-raw"].status, "pass", c["sae-beats-raw"].evidence);
  equal(c["most-latents-above-raw"].status, "n/a"); // fraction above raw is not published
  equal(c["ms-peaks-at-eps4"].status, "pass", c["ms-peaks-at-eps4"].evidence);
  equal(c["best-ms-grows-with-eps"].status, "pass", c["best-ms-grows-with-eps"].evidence);
  equal(c["lower-k-higher-ms"].status, "pass", c["lower-k-higher-ms"].evidence);
  ok(c["lower-k-higher-ms"].evidence.includes("+0.300")); // .37 − .07
  equal(c["matryoshka-r2-lower"].status, "pass", c["matryoshka-r2-lower"].evidence);
  equal(c["l0-near-k"].status, "pass", c["l0-near-k"].evidence);
  for (const x of cs) ok(x.statement.length > 10 && x.ref.length > 3 && x.evidence.length > 5);
});

Deno.test("claims: an empty run is all n/a", () => {
  for (const c of checkClaims([], [])) equal(c.status, "n/a", c.id);
});

/** A small run over ε ∈ {1, 4, 16} on the last layer, shaped by `f`. */
function run(f: (eps: number, sae: string) => Partial<CaseResult>): CaseResult[] {
  const out: CaseResult[] = [];
  for (const sae of ["batchtopk", "matryoshka"]) {
    for (const eps of [1, 4, 16]) {
      out.push(syntheticCase({ layer: "last", sae, expansion: eps, ...f(eps, sae) }));
    }
  }
  return out;
}

Deno.test("claims: synthetic pass and fail", () => {
  const raw = [syntheticLayer("last", [syntheticMs("labels", 0.1, 0.2)])];
  const mean = { 1: 0.2, 4: 0.3, 16: 0.25 } as Record<number, number>;
  const good = run((eps, sae) => ({
    ms: [syntheticMs("labels", mean[eps], 0.5 + eps / 100)],
    fracAboveRaw: (eps === 1 ? { labels: 0.9 } : {}) as Record<string, number>,
    r2: 70 + eps / 4 - (sae === "matryoshka" ? 2.5 : 0),
    l0: 19.6,
  }));
  const g = byId(checkClaims(good, raw));
  for (const id of IDS) {
    equal(g[id].status, id === "lower-k-higher-ms" ? "n/a" : "pass", `${id}: ${g[id].evidence}`);
  }
  ok(g["matryoshka-r2-lower"].evidence.includes("+2.50"));

  const bad = run((eps, sae) => ({
    ms: [syntheticMs("labels", eps === 1 ? 0.05 : 0.3 - eps / 100, 0.9 - eps / 50)],
    fracAboveRaw: (eps === 1 ? { labels: 0.3 } : {}) as Record<string, number>,
    r2: 70 + (sae === "matryoshka" ? 1 : 0),
    l0: eps === 16 ? 40 : 20,
  }));
  const b = byId(checkClaims(bad, raw));
  equal(b["sae-beats-raw"].status, "fail"); // ε=1 mean .05 < raw .10
  ok(
    /fails: .*-x1-k20\/labels mean 0\.050 ≤ raw 0\.100/.test(b["sae-beats-raw"].evidence),
    b["sae-beats-raw"].evidence,
  );
  equal(b["most-latents-above-raw"].status, "fail");
  ok(b["most-latents-above-raw"].evidence.includes("0.30"));
  equal(b["ms-peaks-at-eps4"].status, "pass"); // .05 → .26 → .14: rises then falls
  equal(b["best-ms-grows-with-eps"].status, "fail");
  equal(b["matryoshka-r2-lower"].status, "fail"); // Matryoshka higher
  equal(b["l0-near-k"].status, "fail");
  ok(b["l0-near-k"].evidence.includes("x16"));

  // monotone rise without fall fails (c); a too-large R² gap fails (f)
  const mono = run((eps, sae) => ({
    ms: [syntheticMs("labels", 0.1 + eps / 100, 0.5)],
    r2: sae === "batchtopk" ? 80 : 60,
  }));
  const m = byId(checkClaims(mono, raw));
  equal(m["ms-peaks-at-eps4"].status, "fail");
  equal(m["matryoshka-r2-lower"].status, "fail");
  ok(m["matryoshka-r2-lower"].evidence.includes("+20.00"));
});

Deno.test("claims: partial grids give n/a where data are lacking; K ablation", () => {
  // only ε ≤ 4: (c) needs ε above 4
  const c1 = [1, 4].map((eps) =>
    syntheticCase({
      layer: "last",
      sae: "matryoshka",
      expansion: eps,
      ms: [syntheticMs("labels", 0.1 * eps, 0.5)],
    })
  );
  const r1 = byId(checkClaims(c1, []));
  equal(r1["ms-peaks-at-eps4"].status, "n/a");
  equal(r1["sae-beats-raw"].status, "n/a"); // no raw layer results
  equal(r1["matryoshka-r2-lower"].status, "n/a");
  equal(r1["best-ms-grows-with-eps"].status, "fail"); // best flat at .5
  // K ablation
  const ks = [1, 10, 20, 50].map((k) =>
    syntheticCase({
      layer: "last",
      sae: "matryoshka",
      expansion: 1,
      k,
      ms: [syntheticMs("labels", 0.4 - k / 200, 0.8)],
      l0: k,
    })
  );
  const rk = byId(checkClaims(ks, []));
  equal(rk["lower-k-higher-ms"].status, "pass", rk["lower-k-higher-ms"].evidence);
  equal(rk["l0-near-k"].status, "pass");
  const ksBad = ks.map((c) => ({ ...c, ms: [syntheticMs("labels", 0.1 + c.k / 200, 0.8)] }));
  equal(byId(checkClaims(ksBad, []))["lower-k-higher-ms"].status, "fail");
});

Deno.test("claims: saturated best MS (= 1) neither fails (a) nor counts in (d)", async () => {
  const { syntheticCase, syntheticLayer, syntheticMs } = await import("../src/report/synthetic.ts");
  const { checkClaims } = await import("../src/report/claims.ts");
  const cases = [1, 4].map((e) =>
    syntheticCase({ layer: "last", sae: "batchtopk", expansion: e, ms: [syntheticMs("labels", 0.3, 1)] })
  );
  const layer = syntheticLayer("last", [syntheticMs("labels", 0.1, 1)]);
  const claims = checkClaims(cases, [layer]);
  const a = claims.find((c) => c.id === "sae-beats-raw")!;
  const d = claims.find((c) => c.id === "best-ms-grows-with-eps")!;
  assertNotMatch(a.evidence, /best 1\.000 ≤ raw 1\.000/);
  assertEqualStatus(d.status, "n/a");
  assertMatchText(d.evidence, /saturated/);
});

function assertNotMatch(s: string, re: RegExp) {
  if (re.test(s)) throw new Error(`unexpected ${re} in ${s}`);
}
function assertEqualStatus(a: string, b: string) {
  if (a !== b) throw new Error(`status ${a} != ${b}`);
}
function assertMatchText(s: string, re: RegExp) {
  if (!re.test(s)) throw new Error(`${re} not in ${s}`);
}
