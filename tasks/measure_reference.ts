/**
 * `deno task measure-reference`: measure every SAE of a folder laid out as the reference's
 * sae_train.py writes it (the authors' released weights, or your own run of their scripts) on a
 * data manifest of evaluation activations and similarity embeddings, with the same measurements
 * as `reproduce`, and write the same report and paper diff — no training. Exit codes: 0 ok, 2 bad
 * input/options (one `monobench: …` line and a hint), 3 unexpected error.
 */
import { basename, join } from "node:path";
import { selectBackend } from "../src/backend/select.ts";
import { describeCases } from "../src/grid/cases.ts";
import { checkExperimentTables, runModel } from "../src/grid/experiments.ts";
import { buildReport } from "../src/report/build.ts";
import { diffCounts, loadTolerances } from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { Progress } from "../src/report/progress.ts";
import { writeReport } from "../src/report/writers.ts";
import "../src/sae/mod.ts";
import { cliLayer, type ConfigLayer, describeConfig, resolveConfig } from "../src/run/config.ts";
import { dataHashes, dataSketches, manifestEvalData, verifyRunData } from "../src/run/data.ts";
import {
  checkMeasurable,
  planReference,
  REFERENCE_SEED,
  runReference,
} from "../src/run/measure_reference.ts";
import { type RunProvenance, softwareInfo } from "../src/run/provenance.ts";
import { openRunDir } from "../src/run/rundir.ts";
import { BACKEND_NAMES } from "../src/backend/select.ts";
import type { CaseResult, LayerResult } from "../src/types.ts";
import { parseOptions, runCli } from "../src/util/cli.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { REPO_ROOT } from "../src/util/paths.ts";

const HELP = `monobench measure-reference — measure SAEs saved as the reference code saves them (e.g. the
authors' released weights) with reproduce's measurements, and diff them with the paper's tables

Usage: deno task measure-reference --sae-root DIR --data MANIFEST.json [options]

The SAEs
  --sae-root DIR      a folder as sae_train.py writes it:
                        <sae>_<k>_x<ε>/<acts>_<sae>_<k>_x<ε>/trainer_0/checkpoints/ae_<step>.pt
                      (or a single <sae>_<k>_x<ε> folder); every BatchTopK / Matryoshka SAE in it
                      is measured, its layer taken from <acts> (layer -1 = "last")
  --step S            checkpoints/ae_S.pt (default 100000, what the paper's scripts load) or
                      "final" for ae.pt
  --dataset NAME      only SAEs trained on this dataset's activations (e.g. imagenet)
  --grid EXPR         only some of them, e.g. "layers=last sae=matryoshka eps=1,4"
Data
  --data FILE         a data manifest (deno task import --manifest) with the evaluation split of
                      every layer measured and the similarity embeddings; train splits are not
                      needed. Its "model" (e.g. siglip-so400m-14-384) picks the paper rows.
Comparison
  --experiment NAME   the experiment(s) whose tables and model the diff uses (repeatable; default
                      clip-vitl-main and k-ablation; see experiments/README.md)
  --primary NAME      our similarity source that stands for the experiment's encoder
  --tolerances FILE   JSON with per-metric tolerances for the paper diff
Run
  --backend NAME      ${BACKEND_NAMES.join(" | ")} (default: auto)
  --out DIR           run directory (default: results/reference-<timestamp>); an existing one
                      resumes, reusing every SAE whose checkpoint, data and software match
  --retrain-mismatched  measure again the SAEs whose stored results differ (default: refuse)
  --list              print the SAEs found and the cases they become, then exit
  -h, --help          this help
Relative paths are resolved against the directory you run the command from.
`;

const OPTIONS = {
  "sae-root": { type: "string" },
  step: { type: "string" },
  dataset: { type: "string" },
  grid: { type: "string" },
  data: { type: "string" },
  experiment: { type: "string", multiple: true },
  primary: { type: "string" },
  tolerances: { type: "string" },
  backend: { type: "string" },
  out: { type: "string" },
  "retrain-mismatched": { type: "boolean" },
  list: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

function stamp(d: Date): string {
  return d.toISOString().replace(/[:]/g, "").replace(/\..*/, "").replace("T", "-");
}

function parseStep(v: string | undefined): number | "final" {
  if (v === undefined) return 100_000;
  if (v === "final") return "final";
  const n = Number(v);
  if (v.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
    throw new MonobenchError(`--step must be a non-negative integer or "final", got "${v}"`);
  }
  return n;
}

/** The CLI; returns the exit code (MonobenchError propagates to the caller). */
export async function main(argv: string[]): Promise<number> {
  const v =
    parseOptions("measure-reference", { args: argv, allowPositionals: false, options: OPTIONS }).values;
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const root = v["sae-root"];
  if (root === undefined || root.trim() === "") {
    throw new MonobenchError("--sae-root DIR is required", "see deno task measure-reference --help");
  }
  if (v.data === undefined || v.data === "embedded") {
    throw new MonobenchError(
      "--data MANIFEST.json is required: the evaluation activations of the layers the SAEs were trained on",
      "make one with deno task import --manifest FILE --layer NAME:eval=… --similarity NAME=…",
    );
  }
  const step = parseStep(v.step);
  if (v.dataset !== undefined && !/^[\w.-]+$/.test(v.dataset)) {
    throw new MonobenchError(`--dataset must be a dataset name such as imagenet, got "${v.dataset}"`);
  }
  // The config of a measuring run: the paper preset's training block (what the reference scripts
  // run; informative here), one seed, the reference folder and step.
  const { layer } = cliLayer({
    ...v,
    preset: "paper",
    seeds: String(REFERENCE_SEED) + ",",
    out: v.out ?? join(REPO_ROOT, "results", `reference-${stamp(new Date())}`),
  });
  const resolved = await resolveConfig({ cli: layer as ConfigLayer, reference: { saeRoot: root, step } });
  const { config } = resolved;
  const saeRoot = config.reference!.saeRoot;

  const dataWhat = `the data manifest ${config.data.source}`;
  const data = await manifestEvalData(config.data.source);
  const model = runModel(config.experiment, data.model, dataWhat);
  const fixtures = await loadFixtures();
  checkExperimentTables(config.experiment, fixtures, model);
  const tolerances = config.tolerances ? await loadTolerances(config.tolerances) : undefined;
  const plan = await planReference(saeRoot, {
    step,
    model,
    dataset: v.dataset,
    grid: config.grid,
    experiments: config.experiment,
  });
  if (v.list) {
    const cases = plan.entries.map((e) => e.case);
    console.log(`${cases.length} SAE(s) of ${model} in ${saeRoot}: ${describeCases(cases)}`);
    for (const e of plan.entries) console.log(`  ${e.case.id}  ${e.relFile}  [${e.case.groups.join(", ")}]`);
    for (const s of plan.skipped) console.log(`  left out: ${s}`);
    console.log(`config (hash ${resolved.hash.slice(0, 16)}…):`);
    for (const line of describeConfig(resolved)) console.log(line);
    return 0;
  }
  checkMeasurable(plan, data, dataWhat);

  const progress = new Progress();
  for (const s of plan.skipped) progress.log(`left out ${s}`);
  const run = await openRunDir({
    resolved,
    command: `measure-reference ${argv.join(" ")}`.trim(),
    log: (m) => progress.log(m),
  });
  // Ctrl-C: release the lock on the way out (a kill -9 leaves it stale; the next run takes it over).
  const onInterrupt = () => {
    run.lock.releaseSync();
    Deno.exit(130);
  };
  try {
    Deno.addSignalListener("SIGINT", onInterrupt);
  } catch {
    // signals not supported here
  }
  try {
    await verifyRunData(data);
    const sources = data.similarity.map((s) => s.name);
    if (config.primary !== null && !sources.includes(config.primary)) {
      throw new MonobenchError(
        `--primary ${config.primary} names no similarity source of the data`,
        `the data has: ${sources.join(", ")}`,
      );
    }
    const backend = await selectBackend(config.backend);
    try {
      const software = await softwareInfo();
      const provenance: RunProvenance = {
        monobench: software.monobench,
        gitCommit: software.gitCommit,
        gitDirty: software.gitDirty,
        denoLock: software.denoLock,
        deno: software.deno,
        backend: backend.name,
        device: backend.description,
        configHash: resolved.hash,
        data: dataHashes(data),
        seeds: [REFERENCE_SEED],
        dataSketch: dataSketches(data),
      };
      progress.log(
        `measure: ${plan.entries.length} SAE(s) of ${saeRoot} (step ${step}) [${
          describeCases(plan.entries.map((e) => e.case))
        }], backend ${backend.name} (${backend.description}), data: ${data.description}, out: ${run.dir}`,
      );
      const makeReport = (layers: readonly LayerResult[], cases: readonly CaseResult[], finished: boolean) =>
        buildReport({
          config,
          configHash: resolved.hash,
          provenance,
          runId: basename(run.dir),
          startedAt: run.startedAt,
          finishedAt: finished ? new Date().toISOString() : "",
          dataset: data.description,
          argv,
          layers,
          cases,
          fixtures,
          tolerances,
          model: data.model,
        });
      progress.start(plan.entries.length, plan.entries.map((e) => e.width));
      const out = await runReference(plan, {
        backend,
        data,
        outDir: run.dir,
        software,
        retrainMismatched: config.retrainMismatched,
        progress,
        onCase: async (cases, layers) => {
          await writeReport(run.dir, makeReport(layers, cases, false), { formats: ["json", "csv"] });
        },
      });
      const report = makeReport(out.layers, out.cases, true);
      const files = await writeReport(run.dir, report);
      const counts = diffCounts(report.diff);
      progress.finish(`report in ${files.find((f) => f.endsWith(".html")) ?? run.dir}`);
      console.log(`\nresults: ${run.dir}`);
      for (const f of files) console.log(`  ${f}`);
      console.log(
        `paper diff (${model}): ${counts.within} within tolerance, ${counts.outside} outside, ` +
          `${counts.missing} missing`,
      );
      console.log("claims:");
      for (const c of report.claims) console.log(`  [${c.status}] ${c.id}: ${c.statement} — ${c.evidence}`);
      return 0;
    } finally {
      backend.destroy();
    }
  } finally {
    try {
      Deno.removeSignalListener("SIGINT", onInterrupt);
    } catch {
      // not registered
    }
    await run.close();
  }
}

if (import.meta.main) Deno.exit(await runCli(() => main(Deno.args)));
