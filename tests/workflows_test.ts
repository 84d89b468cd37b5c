/**
 * The GitHub Actions workflows (.github/workflows/*.yml), parsed with a YAML parser: every
 * `deno task X …` they run names a task of deno.json and only flags that task's CLI accepts; the
 * GPU workflow's shard matrix covers 1…n exactly, each shard uploads a uniquely named artifact
 * that the merge job's download pattern matches, the merge runs the regression check against the
 * stored baseline and writes the step summary; the shard commands, run with `--list`, resolve to
 * the baseline's config and together list each of its (case, seed) units once; the CPU workflow
 * runs the README's test command.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse } from "yaml";
import denoJson from "../deno.json" with { type: "json" };
import { CONFIG_CLI_OPTIONS } from "../src/run/config.ts";
import { REPO_ROOT } from "../src/util/paths.ts";
import { MERGE_OPTIONS } from "../tasks/merge.ts";
import { TASK_OPTIONS } from "../tasks/reproduce.ts";

type Options = Record<string, { type: "string" | "boolean"; short?: string }>;

/** The option tables of the tasks with a CLI of their own; other tasks must be called without flags. */
const TASK_FLAGS: Record<string, Options> = {
  reproduce: { ...CONFIG_CLI_OPTIONS, ...TASK_OPTIONS } as Options,
  merge: MERGE_OPTIONS as Options,
};

// deno-lint-ignore no-explicit-any
type Json = any;

const WORKFLOWS = join(REPO_ROOT, ".github", "workflows");

async function workflows(): Promise<Map<string, Json>> {
  const out = new Map<string, Json>();
  for await (const e of Deno.readDir(WORKFLOWS)) {
    if (e.isFile && /\.ya?ml$/.test(e.name)) {
      out.set(e.name, parse(await Deno.readTextFile(join(WORKFLOWS, e.name))));
    }
  }
  return out;
}

/** Replace `${{ expr }}` by a value (`vars` first, else a placeholder). */
function expand(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_m, e: string) => vars[e] ?? "EXPR");
}

/** Shell words of a script, split into simple commands (quotes kept together; operators split). */
function commands(script: string): string[][] {
  const text = script.replace(/\\\n/g, " ");
  const out: string[][] = [];
  let cur: string[] = [], word = "", inWord = false;
  const endWord = () => {
    if (inWord) cur.push(word);
    word = "";
    inWord = false;
  };
  const endCmd = () => {
    endWord();
    if (cur.length) out.push(cur);
    cur = [];
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "'" || ch === '"') {
      const j = text.indexOf(ch, i + 1);
      assert.ok(j > i, `unbalanced quote in: ${script}`);
      word += text.slice(i + 1, j);
      inWord = true;
      i = j;
    } else if (ch === " " || ch === "\t") endWord();
    else if (ch === "\n" || ch === ";" || ch === "|" || ch === "&" || ch === "(" || ch === ")") {
      endCmd();
      if ((ch === "|" || ch === "&") && text[i + 1] === ch) i++;
    } else if (ch === "#" && !inWord) {
      const j = text.indexOf("\n", i);
      i = j < 0 ? text.length : j - 1;
    } else {
      word += ch;
      inWord = true;
    }
  }
  endCmd();
  // Drop redirections (`2>file`, `>>"$F"`, `2>&1`, `< in`).
  return out.map((c) => {
    const w: string[] = [];
    for (let i = 0; i < c.length; i++) {
      if (/^\d*(>>?|<)$/.test(c[i])) i++;
      else if (!/^\d*(>>?|<)/.test(c[i])) w.push(c[i]);
    }
    return w;
  });
}

interface TaskCall {
  workflow: string;
  job: string;
  task: string;
  args: string[];
  /** The step's run script (unexpanded). */
  script: string;
}

/** Every `deno task X …` (also `npx -y deno@V task X …`) in the run steps, expressions expanded. */
function taskCalls(name: string, wf: Json, vars: Record<string, string>): TaskCall[] {
  const out: TaskCall[] = [];
  for (const [job, j] of Object.entries<Json>(wf.jobs ?? {})) {
    for (const step of j.steps ?? []) {
      if (typeof step.run !== "string") continue;
      for (const c of commands(expand(step.run, vars))) {
        const t = c.findIndex((w, i) => w === "task" && i > 0 && /^deno(@[\w.]+)?$/.test(c[i - 1]));
        if (t >= 0) out.push({ workflow: name, job, task: c[t + 1], args: c.slice(t + 2), script: step.run });
      }
    }
  }
  return out;
}

/** Check the flags of a call against a parseArgs option table; returns the problems. */
function flagProblems(args: string[], opts: Options | undefined): string[] {
  const problems: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith("-")) continue;
    if (!opts) {
      problems.push(`${a}: the task takes no flags`);
      continue;
    }
    const [flag, inline] = a.startsWith("--") ? a.slice(2).split(/=(.*)/s) : [a.slice(1), undefined];
    const name = a.startsWith("--") ? flag : Object.keys(opts).find((k) => opts[k].short === flag);
    const o = name === undefined ? undefined : opts[name];
    if (!o) {
      problems.push(`${a}: unknown flag`);
      continue;
    }
    if (o.type === "string" && inline === undefined) {
      if (i + 1 >= args.length || args[i + 1].startsWith("--")) problems.push(`${a}: needs a value`);
      i++;
    }
  }
  return problems;
}

const MATRIX = { "matrix.shard": "1", "github.run_id": "4242", "github.workspace": "/ws" };

Deno.test("workflows: every deno task they call exists and takes the flags used", async () => {
  const wfs = await workflows();
  assert.deepEqual([...wfs.keys()].sort(), ["gpu-regression.yml", "tests.yml"]);
  const tasks = Object.keys(denoJson.tasks);
  const calls = [...wfs].flatMap(([n, wf]) => taskCalls(n, wf, MATRIX));
  assert.deepEqual(
    [...new Set(calls.map((c) => `${c.workflow}:${c.task}`))].sort(),
    ["gpu-regression.yml:merge", "gpu-regression.yml:reproduce", "tests.yml:test"],
  );
  for (const c of calls) {
    assert.ok(tasks.includes(c.task), `${c.workflow} (${c.job}) calls deno task ${c.task}, not in deno.json`);
    const p = flagProblems(c.args, TASK_FLAGS[c.task]);
    assert.deepEqual(p, [], `${c.workflow} (${c.job}): deno task ${c.task} ${c.args.join(" ")}`);
  }
  // The checker itself catches what it should.
  assert.deepEqual(flagProblems(["--shard"], TASK_FLAGS.reproduce), ["--shard: needs a value"]);
  assert.deepEqual(flagProblems(["--bogus", "1"], TASK_FLAGS.merge), ["--bogus: unknown flag"]);
  assert.deepEqual(flagProblems(["--x"], undefined), ["--x: the task takes no flags"]);
  assert.deepEqual(
    commands('a --x "b c" 2>err; deno task y --z=1 >>"$F" && echo \\\n  ok'),
    [["a", "--x", "b c"], ["deno", "task", "y", "--z=1"], ["echo", "ok"]],
  );
});

Deno.test("workflows: GPU regression — shard matrix 1…n on GPU runners, unique artifacts, merge with baseline", async () => {
  const wf = (await workflows()).get("gpu-regression.yml")!;
  // Triggers: a PR label, nightly, by hand.
  assert.ok(wf.on.pull_request.types.includes("labeled"));
  assert.ok(wf.on.schedule.some((s: Json) => typeof s.cron === "string"));
  assert.ok("workflow_dispatch" in wf.on);
  const shard = wf.jobs.shard, merge = wf.jobs.merge;
  assert.match(shard.if, /contains\(github\.event\.pull_request\.labels\.\*\.name, 'gpu-bench'\)/);
  assert.deepEqual(shard["runs-on"], ["self-hosted", "gpu"]);
  assert.equal(shard.strategy["fail-fast"], false);

  // The matrix covers 1…n, n as in the --shard argument.
  const run = shard.steps.find((s: Json) => typeof s.run === "string" && /task reproduce/.test(s.run)).run;
  const m = /--shard \$\{\{ matrix\.shard \}\}\/(\d+)/.exec(run);
  assert.ok(m, run);
  const n = Number(m[1]);
  assert.deepEqual(shard.strategy.matrix.shard, Array.from({ length: n }, (_, i) => i + 1));
  assert.ok(n >= 2);

  // Each shard uploads its --out directory under a name unique per shard and run.
  const up = shard.steps.find((s: Json) => /actions\/upload-artifact@/.test(s.uses ?? ""));
  const name: string = up.with.name;
  assert.match(name, /\$\{\{ matrix\.shard \}\}/);
  assert.match(name, /\$\{\{ github\.run_id \}\}/);
  const outDir = /--out (\S+)/.exec(expand(run, MATRIX))![1];
  const paths = expand(up.with.path, MATRIX).split("\n");
  assert.ok(paths.includes(outDir), `${paths} uploads ${outDir}`);
  const names = shard.strategy.matrix.shard.map((i: number) =>
    expand(name, { "matrix.shard": String(i), "github.run_id": "4242" })
  );
  assert.equal(new Set(names).size, n);

  // The merge job downloads exactly those artifacts (glob), merges them against the baseline.
  assert.deepEqual([merge.needs].flat(), ["shard"]);
  assert.match(merge.if, /always\(\)/);
  const down = merge.steps.find((s: Json) => /actions\/download-artifact@/.test(s.uses ?? ""));
  const pattern = expand(down.with.pattern, { "github.run_id": "4242" });
  const glob = new RegExp(
    `^${pattern.replace(/[.+^$()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`,
  );
  for (const a of names) assert.match(a, glob);
  assert.doesNotMatch(expand(name, { "matrix.shard": "1", "github.run_id": "999" }), glob, "only this run's");
  const mergeCall = taskCalls("gpu-regression.yml", { jobs: { merge } }, MATRIX).find((c) =>
    c.task === "merge"
  )!;
  const args = mergeCall.args;
  assert.equal(args[args.indexOf("--baseline") + 1], "results/baseline/report.json");
  const summary = args[args.indexOf("--summary") + 1];
  assert.ok(args.at(-1)!.startsWith(`${down.with.path}/`), `merges what was downloaded: ${args.at(-1)}`);
  assert.match(
    mergeCall.script,
    new RegExp(`cat ${summary.replace(/\./g, "\\.")} >>"\\$GITHUB_STEP_SUMMARY"`),
  );
  assert.match(mergeCall.script, /exit \$rc/);
  await Deno.stat(join(REPO_ROOT, "results", "baseline", "report.json"));
});

Deno.test("workflows: the shard commands resolve to the baseline's config and list its units once", async () => {
  const wf = (await workflows()).get("gpu-regression.yml")!;
  const baseline = JSON.parse(await Deno.readTextFile(join(REPO_ROOT, "results", "baseline", "report.json")));
  const seen: string[] = [];
  for (const i of wf.jobs.shard.strategy.matrix.shard) {
    const call = taskCalls("gpu-regression.yml", wf, { ...MATRIX, "matrix.shard": String(i) })
      .find((c) => c.task === "reproduce")!;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", join(REPO_ROOT, "tasks", "reproduce.ts"), ...call.args, "--list"],
      cwd: REPO_ROOT,
      env: { NO_COLOR: "1", INIT_CWD: REPO_ROOT, npm_config_user_agent: "deno/2.9.6" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(
      text,
      new RegExp(`config \\(hash ${baseline.run.configHash.slice(0, 16)}…`),
      "baseline config",
    );
    for (const line of text.split("\n")) {
      const u = /^ {2}(\S+) {2}seed (\d+) {2}~/.exec(line);
      if (u) seen.push(`${u[1]}|${u[2]}`);
    }
  }
  const want = baseline.cases.map((c: Json) => `${c.id}|${c.seed}`);
  assert.deepEqual(seen.sort(), want.sort());
});

Deno.test("workflows: the CPU workflow runs the README's test command on ubuntu-latest", async () => {
  const wf = (await workflows()).get("tests.yml")!;
  const readme = await Deno.readTextFile(join(REPO_ROOT, "README.md"));
  const cmd = /^(npx -y deno@[\d.]+ task test)$/m.exec(readme)?.[1];
  assert.ok(cmd, "README names the test command");
  const job = wf.jobs.test;
  assert.equal(job["runs-on"], "ubuntu-latest");
  assert.ok(job.steps.some((s: Json) => s.run === cmd), `runs "${cmd}"`);
  assert.match(await Deno.readTextFile(join(REPO_ROOT, ".ci", "run")), new RegExp(cmd.replace(/\./g, "\\.")));
  // Deno's cache is kept between runs, keyed on the lock file.
  const cache = job.steps.find((s: Json) => /actions\/cache@/.test(s.uses ?? ""));
  assert.match(cache.with.key, /hashFiles\('deno\.lock'\)/);
  assert.equal(join("/ws", cache.with.path), expand(job.env.DENO_DIR, MATRIX));
});
