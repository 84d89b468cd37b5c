/**
 * `deno task merge --out DIR SHARD_DIR...`: combine the run directories of a split run
 * (`reproduce --shard i/n`) into one run directory and one report, then do what the end of a
 * single run does: the paper diff, the claims and (with --baseline) the regression check.
 * Exit codes as reproduce: 0 ok, 1 a change against the baseline, 2 bad input (one
 * `monobench: …` line and a hint), 3 unexpected error.
 */
import { baselineFailed, formatBaselineSummary } from "../src/report/baseline.ts";
import { diffCounts } from "../src/report/diff.ts";
import { writeSummary } from "../src/report/writers.ts";
import { mergeRuns } from "../src/run/merge.ts";
import { parseOptions, runCli } from "../src/util/cli.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { userPath } from "../src/util/paths.ts";

const HELP = `monobench merge — combine the run directories of a split run into one run and report

Usage: deno task merge --out DIR [options] SHARD_DIR...

  SHARD_DIR...        the --out directories of the shards (reproduce --shard i/n), any order
  --out DIR           the merged run directory: new, empty, or an earlier merge's output
  --baseline FILE     regression mode, as in reproduce: exit 1 on a change outside tolerance
  --summary FILE      also write a short Markdown summary (regression check, claims) to FILE,
                      e.g. for a CI step summary
  --tolerances FILE   paper-diff tolerances (default: the shards' --tolerances)
  --compare VARIANT   add the comparison view, as in reproduce
  --compare-with LIST reference variants of the comparison
  --partial           merge even when (case, seed) units are missing (they are listed);
                      default: refuse and name them
  -h, --help          this help

Refused (exit 2), naming the field and the shards: shards of another config, selection, split,
code (monobench version, git commit, deno.lock, Deno) or data (store hashes), and a (case, seed)
found in two shards with different results. Checkpoints are hard-linked where possible, else copied.
`;

/** The task's options (the workflow test reads this table). */
export const MERGE_OPTIONS = {
  out: { type: "string" },
  baseline: { type: "string" },
  summary: { type: "string" },
  tolerances: { type: "string" },
  compare: { type: "string" },
  "compare-with": { type: "string" },
  partial: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** The CLI; returns the exit code (MonobenchError propagates to the caller). */
export async function main(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseOptions("merge", {
    args: argv,
    allowPositionals: true,
    options: MERGE_OPTIONS,
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (v.out === undefined || v.out.trim() === "") {
    throw new MonobenchError("--out DIR is required: the merged run directory", "see deno task merge --help");
  }
  if (positionals.length === 0) {
    throw new MonobenchError("no shard directories given", "usage: deno task merge --out DIR SHARD_DIR...");
  }
  for (
    const [flag, val] of [["--summary", v.summary], ["--baseline", v.baseline], [
      "--tolerances",
      v.tolerances,
    ]]
  ) {
    if (val !== undefined && val.trim() === "") throw new MonobenchError(`${flag} must name a file`);
  }
  if (v["compare-with"] !== undefined && !v.compare) {
    throw new MonobenchError("--compare-with needs --compare VARIANT");
  }
  const compare = v.compare
    ? { variant: v.compare, references: v["compare-with"]?.split(",").map((x) => x.trim()).filter(Boolean) }
    : undefined;
  const path = (p: string | undefined) => (p === undefined ? null : userPath(p));
  const log = (m: string) => console.error(m);
  const r = await mergeRuns({
    out: userPath(v.out),
    dirs: positionals.map((d) => userPath(d)),
    partial: v.partial,
    baseline: path(v.baseline),
    tolerances: path(v.tolerances),
    compare,
    argv,
    log,
  });
  if (compare) {
    const saes = new Set(r.report.cases.map((c) => c.sae));
    for (const name of [compare.variant, ...(compare.references ?? [])]) {
      if (!saes.has(name)) log(`notice: --compare: no case of variant "${name}" in the merged results`);
    }
  }
  const shards = r.info.shards.map((s) => `${s.name} (${s.shard}, ${s.units} unit(s))`).join(", ");
  console.log(`merged ${r.info.units} (case, seed) unit(s) of a ${r.info.count}-way split from ${shards}`);
  console.log(
    `checkpoints: ${r.info.checkpoints.linked} hard-linked, ${r.info.checkpoints.copied} copied, ` +
      `${r.info.checkpoints.absent} not present`,
  );
  console.log(`\nresults: ${r.out}`);
  for (const f of r.files) console.log(`  ${f}`);
  const counts = diffCounts(r.report.diff);
  console.log(
    `paper diff: ${counts.within} within tolerance, ${counts.outside} outside, ${counts.missing} missing ` +
      `(informative: the data and encoders differ from the paper's unless you brought your own)`,
  );
  console.log("claims:");
  for (const c of r.report.claims) console.log(`  [${c.status}] ${c.id}: ${c.statement} — ${c.evidence}`);
  if (v.summary !== undefined) {
    const notes = [
      `merged from ${r.info.shards.length} shard director${r.info.shards.length === 1 ? "y" : "ies"} ` +
      `of a ${r.info.count}-way split: ${shards}`,
      ...r.notices,
    ];
    await writeSummary(userPath(v.summary), r.report, {
      baseline: r.comparison && { path: v.baseline!, comparison: r.comparison },
      notes,
    });
  }
  if (r.comparison) {
    console.log(`\nbaseline ${v.baseline}:\n${formatBaselineSummary(r.comparison)}`);
    if (baselineFailed(r.comparison)) return 1;
  }
  return 0;
}

if (import.meta.main) Deno.exit(await runCli(() => main(Deno.args)));
