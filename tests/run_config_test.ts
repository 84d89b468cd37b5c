/**
 * The resolved run config: which layer wins for every field (defaults < preset < config file <
 * flags, schedule derived from the final steps and batch), validation with the field named,
 * freezing, canonical hashing, seeds, and paths resolved against the caller's directory.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { loadExperiment } from "../src/grid/experiments.ts";
import { getPreset, scaledHyper } from "../src/grid/cases.ts";
import {
  cliLayer,
  CONFIG_CLI_OPTIONS,
  CONFIG_FIELDS,
  type ConfigField,
  configHash,
  type ConfigLayer,
  describeDifferences,
  diffConfigs,
  parseSeeds,
  resolveConfig,
} from "../src/run/config.ts";
import { parseOptions } from "../src/util/cli.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { callerCwd, REPO_ROOT } from "../src/util/paths.ts";

const NOW = new Date("2025-03-04T05:06:07.000Z");

function get(obj: unknown, f: string): unknown {
  return f.split(".").reduce((o, k) => (o as Record<string, unknown>)?.[k], obj);
}

async function withTmp(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mb-cfg-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A config file from a flat layer (train.* and data.* nested). */
function fileJson(layer: ConfigLayer): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [f, v] of Object.entries(layer)) {
    const [a, b] = f.split(".");
    if (b === undefined) out[a] = v;
    else ((out[a] ??= {}) as Record<string, unknown>)[b] = v;
  }
  return out;
}

/**
 * For every field: a value for the config file and one for the command line (in the typed form
 * cliLayer produces), and the resolved value each gives, with the tmp dir as both bases.
 */
function table(
  tmp: string,
): Record<ConfigField, { file: unknown; cli: unknown; fileOut?: unknown; cliOut?: unknown }> {
  const abs = (p: string) => join(tmp, p);
  return {
    preset: { file: "paper", cli: "smoke" },
    experiment: {
      file: ["k-ablation"],
      cli: ["siglip-so400m"],
      fileOut: [loadExperiment("k-ablation")],
      cliOut: [loadExperiment("siglip-so400m")],
    },
    grid: { file: "layers=last", cli: "eps=1" },
    sae: { file: ["topk"], cli: ["relu"] },
    saeModules: { file: ["a.ts"], cli: ["b.ts"], fileOut: [abs("a.ts")], cliOut: [abs("b.ts")] },
    backend: { file: "blas", cli: "cpu" },
    "train.steps": { file: 500, cli: 50 },
    "train.batchSize": { file: 128, cli: 16 },
    "train.lr": { file: "code", cli: 0.001 },
    "train.warmupSteps": { file: 7, cli: 8 },
    "train.thresholdStartStep": { file: 9, cli: 10 },
    "train.thresholdBeta": { file: 0.5, cli: 0.75 },
    "train.deadAfterTokens": { file: 1234, cli: 4321 },
    "train.auxkAlpha": { file: 0.1, cli: 0.2 },
    "train.checkpointEvery": { file: 11, cli: 12 },
    seeds: { file: [4, 2], cli: [7] },
    "data.source": { file: "embedded", cli: "embedded" },
    "data.nTrain": { file: 300, cli: 400 },
    "data.nEval": { file: 100, cli: 200 },
    cache: { file: "c1", cli: "c2", fileOut: abs("c1"), cliOut: abs("c2") },
    out: { file: "o1", cli: "o2", fileOut: abs("o1"), cliOut: abs("o2") },
    primary: { file: "labels", cli: "dinov2" },
    tolerances: { file: "t1.json", cli: "t2.json", fileOut: abs("t1.json"), cliOut: abs("t2.json") },
    baseline: { file: "b1.json", cli: "b2.json", fileOut: abs("b1.json"), cliOut: abs("b2.json") },
    retrainMismatched: { file: false, cli: true },
  };
}

Deno.test("config: for every field, flags beat the config file, which beats the preset and the defaults", async () => {
  await withTmp(async (tmp) => {
    const t = table(tmp);
    assert.deepEqual(Object.keys(t).sort(), [...CONFIG_FIELDS].sort(), "the table covers every field");
    const base = await resolveConfig({ cwd: tmp, now: NOW });
    const def = getPreset("default");
    // Layer 1–2: defaults and the "default" preset.
    assert.equal(base.config.preset, "default");
    assert.equal(base.origins.preset, "default");
    assert.equal(base.config.train.steps, def.hyper.steps);
    assert.equal(base.origins["train.steps"], "preset");
    assert.equal(base.config.train.lr, "paper");
    assert.deepEqual(base.config.seeds, [0, 1, 2], "the default preset's seed count");
    assert.equal(base.origins["train.warmupSteps"], "derived");
    assert.equal(base.config.cache, join(REPO_ROOT, ".cache"), "the default cache is the repository's");
    assert.equal(base.config.out, join(REPO_ROOT, "results", "default-2025-03-04-050607"));
    assert.equal(base.origins.out, "default");

    for (const [f, v] of Object.entries(t) as [ConfigField, (typeof t)[ConfigField]][]) {
      const path = join(tmp, `${f}.json`);
      await Deno.writeTextFile(path, JSON.stringify(fileJson({ [f]: v.file })));
      const fromFile = await resolveConfig({ configFile: path, cwd: "/", now: NOW });
      assert.deepEqual(get(fromFile.config, f), v.fileOut ?? v.file, `${f}: the file's value`);
      assert.equal(fromFile.origins[f], "file", f);
      const both = await resolveConfig({ configFile: path, cli: { [f]: v.cli }, cwd: tmp, now: NOW });
      assert.deepEqual(get(both.config, f), v.cliOut ?? v.cli, `${f}: the flag's value`);
      assert.equal(both.origins[f], "cli", f);
    }
  });
});

Deno.test("config: --steps/--batch rescale the schedule but keep the preset's lr rule", async () => {
  for (const preset of ["smoke", "default"]) {
    const r = await resolveConfig({ cli: { preset, "train.steps": 1000, "train.batchSize": 256 }, now: NOW });
    assert.equal(r.config.train.lr, "paper", `${preset}: the short presets' lr rule stays`);
    assert.equal(r.origins["train.lr"], "preset");
    // The schedule follows the new steps and batch: 1 % warmup, 2.44 % of samples dead window.
    assert.equal(r.config.train.warmupSteps, 10);
    assert.equal(r.config.train.thresholdStartStep, 10);
    assert.equal(r.config.train.deadAfterTokens, Math.round(1000 * 256 * 1e7 / (1e5 * 4096)));
    assert.equal(r.config.train.checkpointEvery, 200);
  }
  const paper = await resolveConfig({ cli: { preset: "paper" }, now: NOW });
  assert.equal(paper.config.train.lr, "code");
  assert.equal(paper.config.train.warmupSteps, 1000);
  assert.equal(paper.config.train.thresholdBeta, 0.999);
  assert.equal(paper.config.train.deadAfterTokens, 10_000_000);
  // An explicit lr rule wins.
  const code = await resolveConfig({
    cli: { preset: "smoke", "train.steps": 50, "train.lr": "code" },
    now: NOW,
  });
  assert.equal(code.config.train.lr, "code");
  // An explicitly set schedule field beats the derivation from the flags' steps.
  await withTmp(async (tmp) => {
    const f = join(tmp, "c.json");
    await Deno.writeTextFile(f, JSON.stringify({ train: { warmupSteps: 3 } }));
    const r = await resolveConfig({ configFile: f, cli: { "train.steps": 1000 }, now: NOW });
    assert.equal(r.config.train.warmupSteps, 3);
    assert.equal(r.config.train.thresholdStartStep, scaledHyper(1000, 512).thresholdStartStep);
  });
});

Deno.test("config: frozen, canonical hash over the result-relevant part only", async () => {
  const r = await resolveConfig({ cli: { preset: "smoke" }, now: NOW });
  assert.ok(Object.isFrozen(r.config) && Object.isFrozen(r.config.train) && Object.isFrozen(r.config.seeds));
  assert.throws(() => {
    (r.config.train as { steps: number }).steps = 1;
  }, TypeError);
  // The hash is sha256 of this canonical text (sorted keys, no spaces), computed independently.
  const t = r.config.train;
  const text = `{"data":{"nEval":1000,"nTrain":2048,"source":"embedded"},"format":"monobench-config/1",` +
    `"train":{"auxkAlpha":${t.auxkAlpha},"batchSize":64,"checkpointEvery":${t.checkpointEvery},` +
    `"deadAfterTokens":${t.deadAfterTokens},"lr":"paper","steps":30,"thresholdBeta":${t.thresholdBeta},` +
    `"thresholdStartStep":${t.thresholdStartStep},"warmupSteps":${t.warmupSteps}}}`;
  assert.equal(r.hash, createHash("sha256").update(text).digest("hex"));
  // Paths, grid, seeds and report options do not change it; training settings and data sizes do.
  const same = await resolveConfig({
    cli: {
      preset: "smoke",
      out: "/elsewhere/x",
      grid: "eps=1",
      seeds: [3, 4],
      primary: "labels",
      cache: "/c",
    },
    now: NOW,
  });
  assert.equal(same.hash, r.hash);
  const steps = await resolveConfig({ cli: { preset: "smoke", "train.steps": 31 }, now: NOW });
  assert.notEqual(steps.hash, r.hash);
  const nEval = await resolveConfig({ cli: { preset: "smoke", "data.nEval": 999 }, now: NOW });
  assert.notEqual(nEval.hash, r.hash);
  // The manifest's location does not matter (its stores' hashes are in the provenance).
  const m1 = await resolveConfig({ cli: { preset: "smoke", "data.source": "/a/m.json" }, now: NOW });
  const m2 = await resolveConfig({ cli: { preset: "smoke", "data.source": "/b/m.json" }, now: NOW });
  assert.equal(m1.hash, m2.hash);
  assert.equal(configHash(m1.config as never), m1.hash);
});

Deno.test("config: seeds — a count, a list, one seed; bad lists are named", async () => {
  assert.deepEqual(parseSeeds("3"), [0, 1, 2]);
  assert.deepEqual(parseSeeds("0,5,9"), [0, 5, 9]);
  assert.deepEqual(parseSeeds("5,"), [5]);
  assert.throws(() => parseSeeds("0"), /--seeds must be an integer ≥ 1/);
  assert.throws(() => parseSeeds("1,x"), /--seeds entry must be an integer ≥ 0, got "x"/);
  const parse = (args: string[]) =>
    cliLayer(
      parseOptions("reproduce", { args, allowPositionals: false, options: CONFIG_CLI_OPTIONS }).values,
    );
  assert.deepEqual(parse(["--seed", "5"]).layer.seeds, [5]);
  assert.deepEqual(parse(["--seeds", "2"]).layer.seeds, [0, 1]);
  assert.throws(() => parse(["--seed", "1", "--seeds", "2"]), /--seed and --seeds both given/);
  await assert.rejects(resolveConfig({ cli: { seeds: [1, 2, 1] } }), /lists seed 1 twice/);
  for (const [p, n] of [["smoke", 1], ["default", 3], ["paper", 1]] as const) {
    assert.equal((await resolveConfig({ cli: { preset: p } })).config.seeds.length, n, p);
    assert.equal(getPreset(p).seeds, n);
  }
});

Deno.test("config: bad values are named by the flag or file key; negative numbers are not 'ambiguous'", async () => {
  const parse = (args: string[]) =>
    cliLayer(
      parseOptions("reproduce", { args, allowPositionals: false, options: CONFIG_CLI_OPTIONS }).values,
    );
  assert.throws(
    () => parse(["--steps", "-1"]),
    (e) => e instanceof MonobenchError && e.message === '--steps must be an integer ≥ 1, got "-1"',
  );
  assert.throws(() => parse(["--batch", "-5"]), /--batch must be an integer ≥ 1, got "-5"/);
  assert.throws(() => parse(["--lr", "-0.1"]), /--lr must be "code", "paper" or a positive number/);
  assert.throws(() => parse(["--n-eval", "abc"]), /--n-eval must be an integer ≥ 10/);
  await assert.rejects(resolveConfig({ cli: { out: "" } }), /--out must name a directory/);
  await assert.rejects(resolveConfig({ cli: { out: "  " } }), /--out must name a directory/);
  await assert.rejects(resolveConfig({ cli: { preset: "huge" } }), /unknown preset "huge"/);
  await assert.rejects(resolveConfig({ cli: { backend: "tpu" } }), /unknown backend "tpu"/);
  await assert.rejects(
    resolveConfig({ cli: { "data.source": "/m.json", "data.nEval": 100 } }),
    /--n-eval applies only to the embedded data/,
  );
  await withTmp(async (tmp) => {
    const f = join(tmp, "c.json");
    const bad = async (obj: unknown, re: RegExp) => {
      await Deno.writeTextFile(f, JSON.stringify(obj));
      await assert.rejects(
        resolveConfig({ configFile: f }),
        (e) => e instanceof MonobenchError && re.test(e.message),
      );
    };
    await bad({ stpes: 3 }, /unknown key "stpes"/);
    await bad({ train: { stepz: 3 } }, /unknown key "train\.stepz"/);
    await bad({ data: { nEvl: 3 } }, /unknown key "data\.nEvl"/);
    await bad({ train: { steps: "40" } }, /config file .*: train\.steps must be an integer ≥ 1, got "40"/);
    await bad(
      { train: { steps: 10, warmupSteps: 20 } },
      /train\.warmupSteps \(config file .*\) = 20 exceeds the 10 training steps/,
    );
    await bad({ seeds: 0 }, /"seeds" must be a count/);
    await bad([], /expected a JSON object/);
    await Deno.writeTextFile(f, "{");
    await assert.rejects(resolveConfig({ configFile: f }), /not valid JSON/);
    await assert.rejects(resolveConfig({ configFile: join(tmp, "none.json") }), /cannot read config file/);
    // A preset chosen in the file applies its values below the file's own.
    await Deno.writeTextFile(f, JSON.stringify({ preset: "smoke", train: { batchSize: 8 } }));
    const r = await resolveConfig({ configFile: f });
    assert.equal(r.config.preset, "smoke");
    assert.equal(r.config.train.steps, 30);
    assert.equal(r.config.train.batchSize, 8);
    // The resolved config itself is a valid config file (run.json and report.json carry it).
    await Deno.writeTextFile(f, JSON.stringify(r.config));
    const again = await resolveConfig({ configFile: f });
    assert.deepEqual(again.config, r.config);
    assert.equal(again.hash, r.hash);
  });
});

Deno.test("config: a changed setting is named in a few words", async () => {
  const a = await resolveConfig({ cli: { "train.steps": 600, preset: "smoke" } });
  const b = await resolveConfig({ cli: { "train.steps": 300, preset: "smoke", "train.lr": "code" } });
  const d = diffConfigs(a.config as never, b.config as never);
  // Steps and lr first; the schedule derived from the steps differs too.
  assert.deepEqual(d.slice(0, 2).map((x) => x.field), ["train.steps", "train.lr"]);
  assert.ok(d.some((x) => x.field === "train.warmupSteps"));
  assert.ok(d.every((x) => x.field.startsWith("train.")));
  const text = describeDifferences(d);
  assert.match(text, /^--steps 600 there, 300 now; --lr paper there, code now/);
  assert.ok(text.length < 200, text);
});

Deno.test("paths: relative paths resolve against the caller's directory (deno task passes it in INIT_CWD)", async () => {
  const env = (m: Record<string, string>) => (k: string) => m[k];
  assert.equal(
    callerCwd(env({ INIT_CWD: "/home/u/proj", npm_config_user_agent: "deno/2.9.6 npm/?" })),
    "/home/u/proj",
  );
  // A stale INIT_CWD outside `deno task` (e.g. inherited from an npm script) is ignored.
  assert.equal(callerCwd(env({ INIT_CWD: "/elsewhere", npm_config_user_agent: "npm/10" })), Deno.cwd());
  assert.equal(callerCwd(env({})), Deno.cwd());
  // Through `deno task` from another directory: the listed out path is under the invoking directory.
  await withTmp(async (tmp) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "task",
        "--config",
        join(REPO_ROOT, "deno.json"),
        "reproduce",
        "--preset",
        "smoke",
        "--out",
        "rel/run",
        "--list",
      ],
      cwd: tmp,
      stdout: "piped",
      stderr: "piped",
      // deno task keeps an inherited INIT_CWD (this suite itself may run under deno task).
      clearEnv: true,
      env: Object.fromEntries(
        ["PATH", "HOME", "DENO_DIR", "XDG_RUNTIME_DIR"].flatMap((k) => {
          const v = Deno.env.get(k);
          return v === undefined ? [] : [[k, v]];
        }).concat([["NO_COLOR", "1"]]),
      ),
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(text, new RegExp(`out\\s+"${join(await Deno.realPath(tmp), "rel", "run")}"\\s+\\(cli\\)`));
  });
});
