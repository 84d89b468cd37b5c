/**
 * `deno task reproduce`: train and measure the benchmark grid end to end (every case once per
 * seed), diff the results with the paper's tables, check the paper's claims, write the report,
 * and (with --baseline) compare with a stored report for CI regression. Exit codes: 0 ok,
 * 1 a change against the baseline, 2 bad input/options (one `monobench: …` line and a hint),
 * 3 unexpected error.
 *
 * Order of work: resolve and freeze the config; load user SAE modules and select the cases;
 * read the fixtures, tolerances and baseline (refusing a baseline of another config); open the
 * run directory (lock, run.json); prepare and verify the data; pick the backend; check every
 * stored case's provenance; train and measure; build and write the report.
 */
import { basename } from "node:path";
import { selectBackend } from "../src/backend/select.ts";
import { describeCases, machineProfile, selectCases } from "../src/grid/cases.ts";
import {
  baselineFailed,
  checkBaselineConfig,
  checkBaselineData,
  compareWithBaseline,
  formatBaselineSummary,
  loadBaseline,
} from "../src/report/baseline.ts";
import { buildReport } from "../src/report/build.ts";
import type { CompareOptions } from "../src/report/compare.ts";
import { diffCounts, loadTolerances } from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { Progress } from "../src/report/progress.ts";
import { writeReport, writeSummary } from "../src/report/writers.ts";
import { listSaes } from "../src/sae/registry.ts";
import "../src/sae/mod.ts";
import {
  cliLayer,
  CONFIG_CLI_OPTIONS,
  CONFIG_HELP,
  describeConfig,
  resolveConfig,
} from "../src/run/config.ts";
import {
  dataForExperiments,
  dataHashes,
  dataSketches,
  embeddedData,
  manifestData,
  type RunData,
  verifyRunData,
} from "../src/run/data.ts";
import { loadSaeModules } from "../src/run/modules.ts";
import { checkRunnable, runPipeline } from "../src/run/pipeline.ts";
import { parseLanes, resolveLanes } from "../src/run/lanes.ts";
import { defaultThreads } from "../src/backend/pool.ts";
import { type RunProvenance, softwareInfo } from "../src/run/provenance.ts";
import { openRunDir } from "../src/run/rundir.ts";
import {
  costBasis,
  describeShardPlan,
  parseShardSpec,
  planShards,
  shardInfo,
  type ShardRecord,
  shardRecord,
  unitSeconds,
  unitsOfShard,
} from "../src/run/shard.ts";
import type { CaseResult, LayerResult } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { parseOptions, runCli } from "../src/util/cli.ts";
import { userPath } from "../src/util/paths.ts";

const HELP =
  `monobench reproduce — train SAEs over the paper's grid, measure MS / R² / L0, diff with the paper

Usage: deno task reproduce [options]

${CONFIG_HELP}
Report
  --compare VARIANT   add the comparison view: VARIANT against each reference variant at equal
                      layer, ε and K, with paired seed intervals and a verdict
  --compare-with LIST reference variants (comma-separated; default: batchtopk, matryoshka)
  --summary FILE      also write a short Markdown summary (regression check, claims) to FILE,
                      e.g. for a CI step summary
Scale out
  --lanes N|auto      train N (case, seed) units at a time on a CPU backend, each lane with its
                      share of the threads (default auto: one lane per thread when every unit is
                      small, batch × width ≤ 2^22; else 1)
  --shard I/N         run only shard I of N (1 ≤ I ≤ N) of the (case, seed) units, split by
                      estimated cost; each shard its own --out, then deno task merge
Actions
  --list              print the selected cases and the resolved config (with where each value
                      came from), then exit; with --shard, the shard's units and estimated cost
  -h, --help          this help
`;

/** The task's own options (actions) next to the config flags; add new ones here. */
export const TASK_OPTIONS = {
  compare: { type: "string" },
  "compare-with": { type: "string" },
  summary: { type: "string" },
  shard: { type: "string" },
  lanes: { type: "string" },
  list: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** The CLI; returns the exit code (MonobenchError propagates to the caller). */
export async function main(argv: string[]): Promise<number> {
  const parsed = parseOptions("reproduce", {
    args: argv,
    allowPositionals: false,
    options: { ...CONFIG_CLI_OPTIONS, ...TASK_OPTIONS },
  });
  const v = parsed.values;
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const { layer, configFile } = cliLayer(v);
  const resolved = await resolveConfig({ cli: layer, configFile });
  const { config } = resolved;
  await loadSaeModules(config.saeModules);
  const { cases } = selectCases(config.preset, {
    grid: config.grid,
    extraSaes: config.sae,
    knownSaes: listSaes(),
    experiments: config.experiment,
  });
  let compare: CompareOptions | undefined;
  if (v.compare !== undefined || v["compare-with"] !== undefined) {
    const saes = [...new Set(cases.map((c) => c.sae))];
    const variant = v.compare;
    if (!variant) throw new MonobenchError("--compare-with needs --compare VARIANT");
    const references = v["compare-with"]?.split(",").map((x) => x.trim()).filter(Boolean);
    for (const name of [variant, ...(references ?? [])]) {
      if (!saes.includes(name)) {
        throw new MonobenchError(
          `--compare: no case of variant "${name}" in the selected grid`,
          `variants in the grid: ${saes.join(", ")}; add one with --sae NAME`,
        );
      }
    }
    compare = { variant, references };
  }
  const shardSpec = v.shard === undefined ? null : parseShardSpec(v.shard);
  const lanesWanted = v.lanes === undefined ? null : parseLanes(v.lanes);
  if (shardSpec && config.baseline) {
    throw new MonobenchError(
      "--baseline compares a whole run, and a shard holds only part of it",
      "run the shards without --baseline, then: deno task merge --baseline FILE --out DIR SHARD_DIR... " +
        "(--partial to check the shards there are)",
    );
  }
  if (v.summary !== undefined && v.summary.trim() === "") {
    throw new MonobenchError("--summary must name a file");
  }
  // A manifest's layer widths come from its stores; the embedded default's are fixed (src/run/shard.ts).
  const planShard = async (data?: RunData): Promise<ShardRecord | null> => {
    if (!shardSpec) return null;
    const d = data ??
      (config.data.source === "embedded" ? undefined : await manifestData(config.data.source));
    const plan = planShards(cases, config.seeds, shardSpec.count, costBasis(config, cases, d));
    return shardRecord(plan, shardSpec, d?.model ?? null);
  };
  if (v.list) {
    const shard = await planShard();
    if (shard) {
      for (const line of describeShardPlan(shard)) console.log(line);
    }
    console.log(`${cases.length} case(s) × ${config.seeds.length} seed(s): ${describeCases(cases)}`);
    for (const c of cases) console.log(`  ${c.id}  [${c.groups.join(", ")}]`);
    console.log(
      `config (hash ${resolved.hash.slice(0, 16)}…; origin: default < preset < file < cli, or derived):`,
    );
    for (const line of describeConfig(resolved)) console.log(line);
    return 0;
  }

  const fixtures = await loadFixtures();
  const tolerances = config.tolerances ? await loadTolerances(config.tolerances) : undefined;
  const baseline = config.baseline ? await loadBaseline(config.baseline) : undefined;
  if (baseline) checkBaselineConfig(baseline, config, resolved.hash);
  const progress = new Progress();
  // A manifest run plans its shard from the data's widths below; the embedded default's plan is known now.
  let shard = config.data.source === "embedded" ? await planShard() : null;
  if (shardSpec && !shard) shard = await planShard(await manifestData(config.data.source));
  const run = await openRunDir({
    resolved,
    command: `reproduce ${argv.join(" ")}`.trim(),
    log: (m) => progress.log(m),
    shard,
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
    // Data, verified on every invocation (a resume included).
    let data: RunData;
    if (config.data.source === "embedded") {
      let lastStage = "";
      data = await embeddedData(config.cache, {
        nTrain: config.data.nTrain ?? undefined,
        nEval: config.data.nEval ?? undefined,
        onProgress: (stage, done, total) => {
          if (stage !== lastStage) {
            lastStage = stage;
            if (total > 1 || done === 0) progress.log(`data: ${stage} (${total})`);
          }
        },
      });
    } else {
      data = await manifestData(config.data.source);
    }
    await verifyRunData(data);
    // The experiments' view of the data: their layer names, the layers and model they need.
    data = dataForExperiments(
      data,
      {
        experiments: config.experiment,
        embedded: config.data.source === "embedded",
        dataWhat: config.data.source === "embedded"
          ? "the embedded default"
          : `the data manifest ${config.data.source}`,
      },
      cases,
      fixtures,
    );
    const sources = data.similarity.map((s) => s.name);
    if (config.primary !== null && !sources.includes(config.primary)) {
      throw new MonobenchError(
        `--primary ${config.primary} names no similarity source of the data`,
        `the data has: ${sources.join(", ")}`,
      );
    }
    const hashes = dataHashes(data), sketches = dataSketches(data);
    if (baseline) {
      for (const n of checkBaselineData(baseline, hashes, sketches)) console.error(`note: ${n}`);
    }
    checkRunnable(cases, config, data);

    let backend = await selectBackend(config.backend);
    const units = shard ? unitsOfShard(shard.plan, shard.index) : undefined;
    const runCases = units ? cases.filter((c) => units.some((u) => u.id === c.id)) : cases;
    const unitCount = units ? units.length : runCases.length * config.seeds.length;
    const threads = defaultThreads();
    const maxWidth = Math.max(
      ...runCases.map((c) => c.expansion * (data.layers.find((l) => l.layer === c.layer)?.d ?? 0)),
    );
    let lanePlan;
    try {
      lanePlan = resolveLanes(
        lanesWanted,
        backend.name,
        threads,
        unitCount,
        config.train.batchSize,
        maxWidth,
      );
    } catch (e) {
      backend.destroy();
      throw e;
    }
    const { count: lanes, backend: laneBackend } = lanePlan;
    if (lanes > 1) {
      // Provenance and resume checks see the lanes' backend, which each lane builds for itself.
      backend.destroy();
      backend = await selectBackend(laneBackend.name, { threads: laneBackend.threads });
    }
    let out;
    let provenance: RunProvenance;
    try {
      const software = await softwareInfo();
      provenance = {
        monobench: software.monobench,
        gitCommit: software.gitCommit,
        gitDirty: software.gitDirty,
        denoLock: software.denoLock,
        deno: software.deno,
        backend: backend.name,
        device: backend.description,
        configHash: resolved.hash,
        data: hashes,
        seeds: [...config.seeds],
        dataSketch: sketches,
      };
      if (shard) provenance.shard = shardInfo(shard);
      const seeds = config.seeds.length > 1
        ? ` × ${config.seeds.length} seeds (${config.seeds.join(",")})`
        : "";
      const part = shard
        ? `shard ${shard.index}/${shard.count}: ${units!.length} (case, seed) unit(s) of `
        : "";
      progress.log(
        `run: ${part}${cases.length} case(s)${seeds} [${describeCases(cases)}], ` +
          `${config.train.steps} steps × ${config.train.batchSize}, backend ${backend.name} ` +
          `(${
            lanes > 1 ? `${lanes} lanes, each ` : ""
          }${backend.description}), data: ${data.description}, out: ${run.dir}`,
      );
      // The comparison needs every case: partial reports (after each case) leave it out.
      const makeReport = (
        layers: readonly LayerResult[],
        results: readonly CaseResult[],
        finished: boolean,
      ) =>
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
          cases: results,
          fixtures,
          tolerances,
          compare: finished ? compare : undefined,
          model: data.model,
        });
      // ETA weights: the cost model's seconds for this backend, rescaled by the progress bar
      // to the seconds seen so far.
      const basis = costBasis(config, cases, data), profile = machineProfile(backend.name);
      const weight = (c: (typeof cases)[number]) => unitSeconds(c, basis, profile);
      const todo = units
        ? units.map((u) => runCases.find((c) => c.id === u.id)!)
        : config.seeds.flatMap(() => cases);
      progress.start(todo.length, todo.map(weight), lanes);
      out = await runPipeline(runCases, {
        units,
        lanes: { count: lanes, backend: laneBackend },
        backend,
        data,
        outDir: run.dir,
        config,
        configHash: resolved.hash,
        software,
        progress,
        // Keep a current report on disk so that an interrupted run still has one.
        onCase: async (done, layers) => {
          await writeReport(run.dir, makeReport(layers, done, false), { formats: ["json", "csv"] });
        },
      });
      const report = makeReport(out.layers, out.cases, true);
      const files = await writeReport(run.dir, report);
      const counts = diffCounts(report.diff);
      progress.finish(`report in ${files.find((f) => f.endsWith(".html")) ?? run.dir}`);
      console.log(`\nresults: ${run.dir}`);
      for (const f of files) console.log(`  ${f}`);
      console.log(
        `paper diff: ${counts.within} within tolerance, ${counts.outside} outside, ${counts.missing} missing ` +
          `(informative: the data and encoders differ from the paper's unless you brought your own)`,
      );
      console.log("claims:");
      for (const c of report.claims) console.log(`  [${c.status}] ${c.id}: ${c.statement} — ${c.evidence}`);

      const cmp = baseline ? compareWithBaseline(report, baseline) : undefined;
      if (v.summary !== undefined) {
        await writeSummary(userPath(v.summary), report, {
          baseline: cmp && { path: config.baseline!, comparison: cmp },
          notes: shard ? [`shard ${shard.index}/${shard.count} of the selection`] : [],
        });
      }
      if (cmp) {
        console.log(`\nbaseline ${config.baseline}:\n${formatBaselineSummary(cmp)}`);
        if (baselineFailed(cmp)) return 1;
      }
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
