/**
 * `deno task reproduce`: train and measure the benchmark grid end to end, diff the results with
 * the paper's tables, check the paper's claims, write the report, and (with --baseline) compare
 * with a stored report for CI regression. Exit codes: 0 ok, 1 regression, 2 bad input/options,
 * 3 unexpected error.
 */
import { join, resolve } from "node:path";
import { BACKEND_NAMES, type BackendName, selectBackend } from "../src/backend/select.ts";
import { describeCases, PRESET_NAMES, scaledHyper, selectCases } from "../src/grid/cases.ts";
import { compareWithBaseline, formatBaselineSummary, loadBaseline } from "../src/report/baseline.ts";
import { checkClaims } from "../src/report/claims.ts";
import { diffAgainstPaper, diffCounts, loadTolerances } from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { Progress } from "../src/report/progress.ts";
import { type Report, REPORT_VERSION } from "../src/report/types.ts";
import { writeReport } from "../src/report/writers.ts";
import { atomicWrite } from "../src/report/atomic.ts";
import { listSaes } from "../src/sae/registry.ts";
import "../src/sae/mod.ts";
import { embeddedData, manifestData, type RunData } from "../src/run/data.ts";
import { runPipeline } from "../src/run/pipeline.ts";
import { jsonText } from "../src/util/json.ts";
import type { CaseResult, LayerResult } from "../src/types.ts";
import { check, MonobenchError } from "../src/util/errors.ts";
import { parseOptions, runCli } from "../src/util/cli.ts";

const HELP =
  `monobench reproduce — train SAEs over the paper's grid, measure MS / R² / L0, diff with the paper

Usage: deno task reproduce [options]

Grid
  --preset NAME       smoke | default | paper (default: default)
  --grid EXPR         filter, e.g. "layers=last,22 eps=1,4 sae=matryoshka k=20" (also from=paper)
  --sae NAMES         add registered SAE types (comma-separated) to the grid
  --sae-module FILE   import a TypeScript module that registers user SAE variants (repeatable)
Training
  --backend NAME      auto | webgpu | blas | cpu | dawn (default: auto)
  --steps N           override the preset's training steps (warmup etc. rescaled)
  --batch N           override the preset's batch size
  --lr RULE           code | paper | <number> (default: the preset's rule, "code")
  --seed N            seed of init and data order (default 0)
Data
  --data SRC          embedded (default) or a data manifest JSON (see README)
  --n-train N, --n-eval N   sizes for the embedded default (default: the preset's)
  --cache DIR         cache for converted models and activation stores (default .cache)
Output
  --out DIR           run directory (default results/<preset>-<timestamp>); an existing run resumes
  --primary NAME      our similarity source that stands for the paper's DINOv2 (default inceptionv3)
  --tolerances FILE   JSON with per-metric tolerances for the paper diff
  --baseline FILE     compare with a stored report.json; exit 1 on regression
  --list              print the selected cases and exit
  -h, --help          this help
`;

interface Cli {
  preset: string;
  grid: string;
  sae: string[];
  saeModules: string[];
  backend: BackendName;
  steps?: number;
  batch?: number;
  lr?: "code" | "paper" | number;
  seed: number;
  data: string;
  nTrain?: number;
  nEval?: number;
  cache: string;
  out?: string;
  primary: string;
  tolerances?: string;
  baseline?: string;
  list: boolean;
}

function int(v: string | undefined, name: string, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  check(Number.isSafeInteger(n) && n >= min, `--${name} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

export function parseCli(argv: string[]): Cli | null {
  const parsed = parseOptions("reproduce", {
    args: argv,
    allowPositionals: false,
    options: {
      preset: { type: "string", default: "default" },
      grid: { type: "string", default: "" },
      sae: { type: "string", multiple: true, default: [] },
      "sae-module": { type: "string", multiple: true, default: [] },
      backend: { type: "string", default: "auto" },
      steps: { type: "string" },
      batch: { type: "string" },
      lr: { type: "string" },
      seed: { type: "string", default: "0" },
      data: { type: "string", default: "embedded" },
      "n-train": { type: "string" },
      "n-eval": { type: "string" },
      cache: { type: "string", default: ".cache" },
      out: { type: "string" },
      primary: { type: "string", default: "inceptionv3" },
      tolerances: { type: "string" },
      baseline: { type: "string" },
      list: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const v = parsed.values;
  if (v.help) return null;
  check(
    (PRESET_NAMES as readonly string[]).includes(v.preset!),
    `unknown preset "${v.preset}"`,
    `valid: ${PRESET_NAMES.join(", ")}`,
  );
  check(
    (BACKEND_NAMES as readonly string[]).includes(v.backend!),
    `unknown backend "${v.backend}"`,
    `valid: ${BACKEND_NAMES.join(", ")}`,
  );
  let lr: Cli["lr"];
  if (v.lr !== undefined) {
    if (v.lr === "code" || v.lr === "paper") lr = v.lr;
    else {
      const n = Number(v.lr);
      check(Number.isFinite(n) && n > 0, `--lr must be "code", "paper" or a positive number, got "${v.lr}"`);
      lr = n;
    }
  }
  return {
    preset: v.preset!,
    grid: v.grid!,
    sae: (v.sae as string[]).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean),
    saeModules: v["sae-module"] as string[],
    backend: v.backend as BackendName,
    steps: int(v.steps, "steps"),
    batch: int(v.batch, "batch"),
    lr,
    seed: int(v.seed, "seed", 0)!,
    data: v.data!,
    nTrain: int(v["n-train"], "n-train", 10),
    nEval: int(v["n-eval"], "n-eval", 10),
    cache: v.cache!,
    out: v.out,
    primary: v.primary!,
    tolerances: v.tolerances,
    baseline: v.baseline,
    list: v.list!,
  };
}

function stamp(d = new Date()): string {
  return d.toISOString().replace(/[:]/g, "").replace(/\..*/, "").replace("T", "-");
}

/** The CLI; returns the exit code (MonobenchError propagates to the caller). */
export async function main(argv: string[]): Promise<number> {
  const cli = parseCli(argv);
  if (!cli) {
    console.log(HELP);
    return 0;
  }
  for (const m of cli.saeModules) {
    try {
      await import(new URL(resolve(m), "file://").href);
    } catch (e) {
      throw new MonobenchError(`cannot load SAE module ${m}: ${(e as Error).message}`);
    }
  }
  const { preset, cases } = selectCases(cli.preset, {
    grid: cli.grid,
    extraSaes: cli.sae,
    knownSaes: listSaes(),
  });
  const hyper = { ...preset.hyper };
  if (cli.steps !== undefined || cli.batch !== undefined) {
    Object.assign(hyper, scaledHyper(cli.steps ?? hyper.steps, cli.batch ?? hyper.batchSize));
  }
  if (cli.lr === "code" || cli.lr === "paper") hyper.lrRule = cli.lr;
  if (cli.list) {
    console.log(`${cases.length} case(s): ${describeCases(cases)}`);
    for (const c of cases) console.log(`  ${c.id}  [${c.groups.join(", ")}]`);
    console.log(`training: ${JSON.stringify(hyper)}`);
    return 0;
  }

  const fixtures = await loadFixtures();
  const tolerances = cli.tolerances ? await loadTolerances(cli.tolerances) : undefined;
  const baseline = cli.baseline ? await loadBaseline(cli.baseline) : undefined;
  const outDir = cli.out ?? join("results", `${preset.name}-${stamp()}`);
  const progress = new Progress();

  // Data.
  let data: RunData;
  if (cli.data === "embedded") {
    let lastStage = "";
    data = await embeddedData(cli.cache, {
      nTrain: cli.nTrain ?? preset.data.nTrain,
      nEval: cli.nEval ?? preset.data.nEval,
      onProgress: (stage, done, total) => {
        if (stage !== lastStage) {
          lastStage = stage;
          if (total > 1 || done === 0) progress.log(`data: ${stage} (${total})`);
        }
      },
    });
  } else {
    data = await manifestData(cli.data);
  }

  // Run directory: resume only the same run.
  await Deno.mkdir(outDir, { recursive: true });
  const runMeta = {
    preset: preset.name,
    grid: cli.grid,
    hyper,
    lr: cli.lr ?? null,
    seed: cli.seed,
    data: data.fingerprint,
  };
  const runPath = join(outDir, "run.json");
  let startedAt = new Date().toISOString();
  try {
    const prev = JSON.parse(await Deno.readTextFile(runPath));
    // The grid may change between invocations (cases are cached per id); training may not.
    const key = (m: Record<string, unknown>) => JSON.stringify([m.hyper, m.lr, m.seed, m.data]);
    const same = key(prev.meta ?? {}) === key(runMeta);
    if (!same) {
      throw new MonobenchError(
        `${outDir} holds a run with other settings (${JSON.stringify(prev.meta)})`,
        "choose another --out directory, or repeat the original options to resume it",
      );
    }
    startedAt = prev.startedAt ?? startedAt;
    progress.log(`resuming the run in ${outDir}`);
  } catch (e) {
    if (e instanceof MonobenchError) throw e;
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new MonobenchError(`${runPath} is unreadable or malformed: ${(e as Error).message}`);
    }
    await atomicWrite(runPath, jsonText({ startedAt, meta: runMeta }));
  }

  const backend = await selectBackend(cli.backend);
  progress.log(
    `monobench: ${cases.length} case(s) [${
      describeCases(cases)
    }], ${hyper.steps} steps × ${hyper.batchSize}, ` +
      `backend ${backend.name} (${backend.description}), data: ${data.description}, out: ${outDir}`,
  );

  const makeReport = (layers: LayerResult[], results: CaseResult[], finished: boolean): Report => {
    const diff = diffAgainstPaper(results, layers, fixtures, { primarySource: cli.primary, tolerances });
    return {
      version: REPORT_VERSION,
      run: {
        id: outDir.split("/").filter(Boolean).pop() ?? outDir,
        startedAt,
        finishedAt: finished ? new Date().toISOString() : "",
        preset: preset.name,
        grid: cli.grid,
        backend: backend.name,
        device: backend.description,
        dataset: data.description,
        denoVersion: Deno.version.deno,
        seed: cli.seed,
        options: { hyper, lr: cli.lr ?? hyper.lrRule, primary: cli.primary, sae: cli.sae, data: cli.data },
      },
      layers,
      cases: results,
      diff,
      claims: checkClaims(results, layers),
    };
  };

  progress.start(
    cases.length,
    cases.map((c) => c.expansion * (data.layers.find((l) => l.layer === c.layer)?.d ?? 1)),
  );
  let out;
  try {
    out = await runPipeline(cases, {
      backend,
      data,
      outDir,
      hyper,
      seed: cli.seed,
      lr: typeof cli.lr === "number" ? cli.lr : undefined,
      progress,
      // Keep a current report on disk so an interrupted run still has one.
      onCase: async (done, layers) => {
        await writeReport(outDir, makeReport([...layers], [...done], false), { formats: ["json", "csv"] });
      },
    });
  } finally {
    backend.destroy();
  }
  const report = makeReport(out.layers, out.cases, true);
  const files = await writeReport(outDir, report);
  const counts = diffCounts(report.diff);
  progress.finish(`report in ${files.find((f) => f.endsWith(".html")) ?? outDir}`);
  console.log(`\nresults: ${outDir}`);
  for (const f of files) console.log(`  ${f}`);
  console.log(
    `paper diff: ${counts.within} within tolerance, ${counts.outside} outside, ${counts.missing} missing ` +
      `(informative: the data and encoders differ from the paper's unless you brought your own)`,
  );
  console.log("claims:");
  for (const c of report.claims) console.log(`  [${c.status}] ${c.id}: ${c.statement} — ${c.evidence}`);

  if (baseline) {
    const cmp = compareWithBaseline(report, baseline);
    console.log(`\nbaseline ${cli.baseline}:\n${formatBaselineSummary(cmp)}`);
    if (cmp.regressions.length > 0) return 1;
  }
  return 0;
}

if (import.meta.main) Deno.exit(await runCli(() => main(Deno.args)));
