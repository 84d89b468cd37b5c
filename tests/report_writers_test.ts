import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { join } from "node:path";
import { atomicWrite } from "../src/report/atomic.ts";
import { checkClaims } from "../src/report/claims.ts";
import { diffAgainstPaper } from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { renderHtml } from "../src/report/html.ts";
import { escapeHtml, lineChart, niceTicks } from "../src/report/svg.ts";
import { caseSortKey } from "../src/report/format.ts";
import { syntheticCase, syntheticLayer, syntheticMs, syntheticReport } from "../src/report/synthetic.ts";
import { type Report, REPORT_VERSION } from "../src/report/types.ts";
import { renderMarkdown, reportJson, resultsCsv, writeReport } from "../src/report/writers.ts";
import { MonobenchError } from "../src/util/errors.ts";

const fx = await loadFixtures();

function sampleReport(): Report {
  const cases = [];
  for (const sae of ["batchtopk", "matryoshka", "<script>alert(1)</script>"]) {
    for (const eps of [1, 4, 8]) {
      cases.push(syntheticCase({
        layer: "last",
        sae,
        expansion: eps,
        ms: [syntheticMs("labels", 0.2 + eps / 100, 0.6 + eps / 50), syntheticMs("inceptionv3", 0.1, 0.4)],
        fracAboveRaw: { labels: 0.8, inceptionv3: 0.7 },
        r2: 70 + eps,
        fve: { fve: 0.7, r2_global: 0.71 },
      }));
    }
  }
  for (const k of [1, 10, 50]) {
    cases.push(syntheticCase({
      layer: "last",
      sae: "matryoshka",
      expansion: 1,
      k,
      ms: [syntheticMs("labels", 0.3 - k / 500, 0.7), syntheticMs("inceptionv3", NaN, 0.4)],
      l0: k * 0.98,
    }));
  }
  const layers = [
    syntheticLayer("last", [syntheticMs("labels", 0.1, 0.2), syntheticMs("inceptionv3", 0.05, 0.1)]),
    syntheticLayer("11", [syntheticMs("labels", 0.1, 0.2)]),
  ];
  return syntheticReport(cases, layers, {
    diff: diffAgainstPaper(cases, layers, fx),
    claims: checkClaims(cases, layers),
  });
}

Deno.test("writers: report.json, results.csv, report.md, report.html", async () => {
  const r = sampleReport();
  const dir = await Deno.makeTempDir();
  try {
    const paths = await writeReport(join(dir, "run"), r);
    deepStrictEqual(paths.map((p) => p.split("/").pop()), [
      "report.json",
      "results.csv",
      "results_seeds.csv",
      "report.md",
      "report.html",
    ]);
    // JSON round trip (NaN → null)
    const back = JSON.parse(await Deno.readTextFile(paths[0]));
    equal(back.cases.length, r.cases.length);
    equal(back.version, REPORT_VERSION);
    equal(back.cases.find((c: { k: number }) => c.k === 50).ms[1].mean, null);
    equal(back.claims.length, 7);
    // CSV: one row per case (one seed here: std and interval empty, n 1), MS flattened per source
    const rows = parse(await Deno.readTextFile(paths[1]), { columns: true }) as Record<string, string>[];
    equal(rows.length, r.cases.length);
    for (
      const c of [
        "ms_labels_mean_mean",
        "ms_inceptionv3_max_ci_lo",
        "frac_above_raw_labels_n",
        "fve_r2_global_std",
      ]
    ) {
      ok(c in rows[0], c);
    }
    const row = rows.find((x) => x.id === "batchtopk-last-x4-k20")!;
    equal(Number(row.ms_labels_mean_mean), 0.2 + 4 / 100);
    deepStrictEqual([row.r2_mean, row.r2_std, row.r2_ci_lo, row.r2_ci_hi, row.r2_n], ["74", "", "", "", "1"]);
    equal(row.seeds, "0");
    equal(rows.find((x) => x.k === "50")!.ms_inceptionv3_mean_mean, "");
    // per-seed CSV: the old one-row-per-result layout with a seed column
    const seedRows = parse(await Deno.readTextFile(paths[2]), { columns: true }) as Record<string, string>[];
    equal(seedRows.length, r.cases.length);
    equal(seedRows.find((x) => x.id === "batchtopk-last-x4-k20")!.r2, "74");
    // Markdown: claims and paper numbers next to ours
    const md = await Deno.readTextFile(paths[3]);
    ok(md.includes("## Claims") && md.includes("sae-beats-raw"));
    ok(md.includes("74.0 (77.1)"), "our R² for batchtopk last ×4 next to the paper's (Table A9)");
    ok(!md.includes("<script>"), "markdown escapes <");
    // HTML: self-contained, SVG plots, escaped names
    const html = await Deno.readTextFile(paths[4]);
    ok(html.startsWith("<!DOCTYPE html>"));
    ok(!/<script/i.test(html), "no raw <script> in the page");
    ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
    ok(!/(src|href)=["']?https?:/i.test(html) && !html.includes("<link"), "no external assets");
    const svgs = html.match(/<svg /g) ?? [];
    ok(svgs.length >= 8, `${svgs.length} charts`);
    for (
      const t of [
        "Sorted MS, layer last, source labels",
        "MS mean vs ε (labels",
        "MS max vs ε",
        "R² vs ε",
        "L0 vs ε",
        "K ablation: MS mean vs K",
        "raw neurons",
        "R² vs MS mean (labels), all cases",
        "R² vs L0, all cases",
      ]
    ) ok(html.includes(escapeHtml(t)), t);
    equal((html.match(/<svg /g) ?? []).length, (html.match(/<\/svg>/g) ?? []).length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writers: render functions on an empty report", () => {
  const r = syntheticReport([], []);
  ok(renderHtml(r).includes("No data to plot"));
  ok(renderMarkdown(r).includes("0 within tolerance"));
  equal(resultsCsv(r).trim().split("\n").length, 1);
});

Deno.test("svg: chart basics", () => {
  const svg = lineChart({
    title: "t <&>",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: 'a"b', points: [[1, 0.5], [4, NaN], [16, 0.7]] }, { name: "empty", points: [] }],
    xLog2: true,
  });
  ok(svg.includes("t &lt;&amp;&gt;") && svg.includes("a&quot;b") && !svg.includes("empty"));
  ok(svg.includes(">16</text>"));
  ok(lineChart({ title: "n", xLabel: "", yLabel: "", series: [] }).includes("no data"));
  deepStrictEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  // A one-ulp span (MS max 1 next to 1 + 2⁻⁵²) once looped forever.
  deepStrictEqual(niceTicks(1, 1 + 2 ** -52), [1]);
  deepStrictEqual(niceTicks(-0.3, 0.7, 5), [-0.2, 0, 0.2, 0.4, 0.6]);
});

Deno.test("atomic writes: a failure leaves the old file intact and no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = sampleReport();
    await writeReport(dir, r);
    const before = await Deno.readTextFile(join(dir, "report.json"));
    // rendering fails (a BigInt cannot be serialised): nothing is written
    const broken = { ...r, run: { ...r.run, options: { big: 1n } } } as unknown as Report;
    await rejects(writeReport(dir, broken));
    equal(await Deno.readTextFile(join(dir, "report.json")), before);
    // the rename fails (the target is a directory): temp file removed, MonobenchError
    await Deno.mkdir(join(dir, "blocked"));
    await rejects(
      atomicWrite(join(dir, "blocked"), "x"),
      (e) => e instanceof MonobenchError && /blocked/.test(e.message),
    );
    await atomicWrite(join(dir, "report.json"), "new");
    equal(await Deno.readTextFile(join(dir, "report.json")), "new");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    ok(!names.some((n) => n.endsWith(".tmp")), names.join(","));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writers: three seeds — intervals in the CSV, Markdown and HTML; the comparison view", async () => {
  const { compareVariants } = await import("../src/report/compare.ts");
  const { withSeeds } = await import("../src/report/synthetic.ts");
  const one = sampleReport();
  const d = [-1, 0, 1];
  const cases = withSeeds(one.cases.filter((c) => !c.sae.includes("<")), [0, 1, 2], (c, _s, i) => ({
    r2: c.r2 + 0.5 * d[i],
    ms: c.ms.map((m) => ({ ...m, mean: m.mean + 0.01 * d[i], curve: m.curve.map((y) => y + 0.01 * d[i]) })),
  }));
  const r = syntheticReport(cases, one.layers, {
    diff: diffAgainstPaper(cases, one.layers, fx),
    claims: checkClaims(cases, one.layers),
    comparison: compareVariants(cases, { variant: "matryoshka", references: ["batchtopk"] }),
  });
  const T2 = 0.95 / Math.sqrt(2 * 0.975 * 0.025);
  const half = T2 * 0.5 / Math.sqrt(3); // R² ± 0.5 over three seeds: s = 0.5
  const rows = parse(resultsCsv(r), { columns: true }) as Record<string, string>[];
  equal(rows.length, cases.length / 3);
  const row = rows.find((x) => x.id === "batchtopk-last-x4-k20")!;
  equal(row.seeds, "0;1;2");
  equal(Number(row.r2_mean), 74);
  ok(Math.abs(Number(row.r2_std) - 0.5) < 1e-12);
  ok(
    Math.abs(Number(row.r2_ci_lo) - (74 - half)) < 1e-9 &&
      Math.abs(Number(row.r2_ci_hi) - (74 + half)) < 1e-9,
  );
  equal(row.r2_n, "3");
  const md = renderMarkdown(r);
  ok(md.includes(`74.0 ± ${half.toFixed(1)} (77.1)`), "R² mean ± half-width, then the paper's");
  ok(md.includes("| seeds per case | 3 |"));
  ok(md.includes("Student-t"));
  ok(md.includes("## Comparison: matryoshka vs batchtopk"));
  ok(/\| batchtopk \| last \| 4 \| 20 \| R² % \|/.test(md));
  const html = renderHtml(r);
  ok(html.includes('class="band"'), "sorted-MS bands");
  ok(html.includes('class="eb"'), "error bars on the ε plots");
  ok(html.includes("Comparison: matryoshka vs batchtopk"));
  ok(html.includes("Pareto"));
  equal((html.match(/<svg /g) ?? []).length, (html.match(/<\/svg>/g) ?? []).length);
  // the paper diff averages the seeds
  const dr = r.diff.rows.find((x) => x.caseId === "batchtopk-last-x4-k20" && x.metric === "r2")!;
  equal(dr.n, 3);
  ok(md.includes(`${(74).toFixed(4)} ± ${half.toFixed(4)} (n=3)`));
  // report.json carries one {mean, std, ci95, n} per metric when the builder stores the aggregates
  const { aggregateCases } = await import("../src/report/stats.ts");
  const withAgg = { ...r, aggregates: aggregateCases(r.cases) };
  const back = JSON.parse(reportJson(withAgg));
  const a = back.aggregates.find((x: { id: string }) => x.id === "batchtopk-last-x4-k20");
  deepStrictEqual(Object.keys(a.r2), ["mean", "std", "ci95", "n"]);
  equal(a.r2.n, 3);
});

Deno.test("writers: one seed — claims say 'not resolved at 1 seed', no ± anywhere", () => {
  const r = sampleReport();
  const md = renderMarkdown(r);
  ok(md.includes("not resolved at 1 seed"), "unresolved claim status");
  ok(md.includes("| criterion |"));
  const cases = md.slice(md.indexOf("## Cases"), md.indexOf("## Raw neurons"));
  ok(!cases.slice(cases.indexOf("| case |")).includes("±"), "no interval with one seed");
});

Deno.test("svg: bands, error bars and the scatter chart", async () => {
  const { scatterChart } = await import("../src/report/svg.ts");
  const band = lineChart({
    title: "b",
    xLabel: "",
    yLabel: "",
    series: [{
      name: "s",
      points: [[0, 1], [0.5, 0.5], [1, 0]],
      interval: { lo: [0.9, 0.4, NaN], hi: [1.1, 0.6, NaN], style: "band" },
    }],
  });
  ok(band.includes('class="band"'));
  ok(band.includes("[0.4000, 0.6000]"), "the interval in the point tooltip");
  const bars = lineChart({
    title: "e",
    xLabel: "",
    yLabel: "",
    series: [{
      name: "s",
      points: [[1, 2], [4, 3]],
      interval: { lo: [1.5, NaN], hi: [2.5, NaN], style: "bars" },
    }],
    xLog2: true,
  });
  equal((bars.match(/class="eb"/g) ?? []).length, 1); // the NaN interval is not drawn
  const sc = scatterChart({
    title: "p <x>",
    xLabel: "MS",
    yLabel: "R²",
    series: [{
      name: "a&b",
      points: [{ x: 0.2, y: 70, xlo: 0.1, xhi: 0.3, ylo: 69, yhi: 71, label: "c1" }, {
        x: NaN,
        y: 1,
        label: "skip",
      }],
      line: [[0.2, 70], [0.3, 71]],
    }],
  });
  ok(sc.includes("p &lt;x&gt;") && sc.includes("a&amp;b") && !sc.includes("skip"));
  equal((sc.match(/class="eb"/g) ?? []).length, 2); // x and y bars
  ok(sc.includes("Pareto front"));
  ok(scatterChart({ title: "n", xLabel: "", yLabel: "", series: [] }).includes("no data"));
});

Deno.test("report order: numbered layers by number, named ones, then last (any model's layer names)", () => {
  const layers = ["last", "21", "post_mlp", "11", "2", "16"];
  const sorted = layers.map((layer) => ({ layer, sae: "b", expansion: 1, k: 20 }))
    .sort((a, b) => caseSortKey(a) < caseSortKey(b) ? -1 : 1).map((c) => c.layer);
  deepStrictEqual(sorted, ["2", "11", "16", "21", "post_mlp", "last"]);
});
