import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { join } from "node:path";
import { atomicWrite } from "../src/report/atomic.ts";
import { checkClaims } from "../src/report/claims.ts";
import { diffAgainstPaper } from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { renderHtml } from "../src/report/html.ts";
import { escapeHtml, lineChart, niceTicks } from "../src/report/svg.ts";
import { syntheticCase, syntheticLayer, syntheticMs, syntheticReport } from "../src/report/synthetic.ts";
import type { Report } from "../src/report/types.ts";
import { renderMarkdown, resultsCsv, writeReport } from "../src/report/writers.ts";
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
      "report.md",
      "report.html",
    ]);
    // JSON round trip (NaN → null)
    const back = JSON.parse(await Deno.readTextFile(paths[0]));
    equal(back.cases.length, r.cases.length);
    equal(back.version, 1);
    equal(back.cases.find((c: { k: number }) => c.k === 50).ms[1].mean, null);
    equal(back.claims.length, 7);
    // CSV: one row per case, MS flattened per source
    const rows = parse(await Deno.readTextFile(paths[1]), { columns: true }) as Record<string, string>[];
    equal(rows.length, r.cases.length);
    ok("ms_labels_mean" in rows[0] && "ms_inceptionv3_max" in rows[0] && "frac_above_raw_labels" in rows[0]);
    ok("fve_r2_global" in rows[0]);
    const row = rows.find((x) => x.id === "batchtopk-last-x4-k20")!;
    equal(Number(row.ms_labels_mean), 0.2 + 4 / 100);
    equal(Number(row.r2), 74);
    equal(rows.find((x) => x.k === "50")!.ms_inceptionv3_mean, "");
    // Markdown: claims and paper numbers next to ours
    const md = await Deno.readTextFile(paths[2]);
    ok(md.includes("## Claims") && md.includes("sae-beats-raw"));
    ok(md.includes("74.0 (77.1)"), "our R² for batchtopk last ×4 next to the paper's (Table A9)");
    ok(!md.includes("<script>"), "markdown escapes <");
    // HTML: self-contained, SVG plots, escaped names
    const html = await Deno.readTextFile(paths[3]);
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
