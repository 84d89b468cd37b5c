/**
 * `deno task measure`: measure an existing SAE checkpoint (a monobench one, a SAELens
 * jumprelu / topk / standard SAE, or a dictionary_learning BatchTopKSAE /
 * MatroyshkaBatchTopKSAE `ae.pt` as the reference code saves it) on your activations: MS per similarity source, R² / FVE,
 * L0, dead latents, and the raw-neuron MS of the same layer.
 * Exit codes: 0 ok, 2 bad input/options, 3 unexpected error.
 */
import { defaultIo, type Io, parseOptions, runCli } from "../src/util/cli.ts";
export type { Io };
import { dirname } from "node:path";
import { BACKEND_NAMES, type BackendName, selectBackend } from "../src/backend/select.ts";
import { type Matrix, openMatrix } from "../src/io/import.ts";
import { formatMeasure, loadSaeForMeasure, measureSae, reportJson, scoresCsv } from "../src/io/measure.ts";
import { atomicWrite } from "../src/report/atomic.ts";
import { manifestData } from "../src/run/data.ts";
import { loadSaeModules } from "../src/run/modules.ts";
import "../src/sae/mod.ts";
import { check } from "../src/util/errors.ts";
import { enterCallerCwd, userPath } from "../src/util/paths.ts";

export const HELP = `monobench measure — MS, R², L0 and dead latents of an existing SAE checkpoint

Usage:
  deno task measure --sae SAE --data MANIFEST.json [--layer L] [options]
  deno task measure --sae SAE --acts STORE --similarity NAME=STORE... [options]

The SAE
  --sae SAE           a checkpoint directory: cfg.json + sae_weights.safetensors, from monobench
                      (results/<run>/cases/<id>/sae) or SAELens (architecture jumprelu with one
                      shared threshold, topk, standard; normalize_activations "none");
                      or a dictionary_learning BatchTopKSAE / MatroyshkaBatchTopKSAE checkpoint
                      as the reference code writes it: an ae.pt / ae_<step>.pt file, or its
                      trainer_0 folder (config.json, ae.pt, checkpoints/ae_<step>.pt)
  --sae-module FILE   import a TypeScript module that registers the checkpoint's SAE variant
                      (e.g. examples/jumprelu.ts; repeatable), as in deno task reproduce
  --step S            in a trainer_0 folder: checkpoints/ae_S.pt (default 100000, what the
                      paper's scripts load) or "final" for ae.pt
Data (evaluation split; the same images, in the same order, in every file)
  --data FILE         a data manifest (see deno task import --manifest): the eval split of the
                      layer and every similarity source of the manifest
  --layer L           the manifest's layer by name (optional when the manifest has one layer)
  --acts STORE        activations [N, d]: an activation store directory, a .npy / .pt / .csv
                      file, or a folder of save_activations.py parts (…_part<N>.pt)
  --similarity S      NAME=STORE: embeddings [N, D] of the same images from a similarity encoder
                      (store, .npy, .pt or .csv; repeatable). Without any, MS is skipped.
Options
  --backend NAME      ${BACKEND_NAMES.join(" | ")} (default: auto)
  --no-threshold      use the training activation (batch top-K) instead of the thresholded
                      encode (monobench BatchTopK / Matryoshka checkpoints)
  --recon-batch N     rows per batch of the batch-mean FVE (the paper's R²; default 4096)
  --out FILE.json     write the full results as JSON
  --scores FILE.csv   per-latent MS: latent,fires,<source>... (NaN for dead / constant latents)
  -h, --help          this help

Example
  deno task measure --sae results/default-x/cases/last-matryoshka-x4-k20/sae \\
      --data data/clip.json --layer last --out measure.json --scores scores.csv
  deno task measure --sae checkpoints_dir/matroyshka_batch_top_k_20_x4/<acts>_matroyshka_batch_top_k_20_x4/trainer_0 \\
      --acts activations_dir/raw/imagenet_val_activations_clip-vit-large-patch14-336_-1_post_projection \\
      --similarity dinov2=embeddings_dir/imagenet_val_embeddings_dinov2-base.pt
`;

/** Run the CLI (throws MonobenchError on bad input). */
export async function run(argv: string[], io: Io = defaultIo): Promise<number> {
  const parsed = parseOptions("measure", {
    args: argv,
    allowPositionals: false,
    options: {
      sae: { type: "string" },
      "sae-module": { type: "string", multiple: true, default: [] },
      step: { type: "string" },
      data: { type: "string" },
      layer: { type: "string" },
      acts: { type: "string" },
      similarity: { type: "string", multiple: true, default: [] },
      backend: { type: "string", default: "auto" },
      "no-threshold": { type: "boolean", default: false },
      "recon-batch": { type: "string" },
      out: { type: "string" },
      scores: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const v = parsed.values;
  if (v.help) {
    io.out(HELP);
    return 0;
  }
  check(v.sae !== undefined, "--sae is required", "see deno task measure --help");
  let step: number | "final" | undefined;
  if (v.step !== undefined) {
    step = v.step === "final" ? "final" : Number(v.step);
    check(
      step === "final" || (Number.isSafeInteger(step) && step >= 0),
      `--step must be a checkpoint step (e.g. 100000) or "final", got "${v.step}"`,
    );
  }
  check(
    (BACKEND_NAMES as readonly string[]).includes(v.backend!),
    `unknown backend "${v.backend}"`,
    `valid: ${BACKEND_NAMES.join(", ")}`,
  );
  check(
    (v.data === undefined) !== (v.acts === undefined),
    "give either --data MANIFEST [--layer L] or --acts STORE [--similarity NAME=STORE...]",
  );
  let reconBatch: number | undefined;
  if (v["recon-batch"] !== undefined) {
    reconBatch = Number(v["recon-batch"]);
    check(
      Number.isSafeInteger(reconBatch) && reconBatch >= 2,
      `--recon-batch must be an integer ≥ 2, got "${v["recon-batch"]}"`,
    );
  }
  for (const [opt, ext] of [["out", ".json"], ["scores", ".csv"]] as const) {
    const p = v[opt];
    check(p === undefined || p.length > 0, `--${opt} needs a file name`);
    if (p !== undefined && !p.toLowerCase().endsWith(ext)) {
      io.err(`monobench: note: --${opt} ${p} is not a ${ext} file`);
    }
  }

  // User variants must be registered before their checkpoint can be read.
  await loadSaeModules((v["sae-module"] as string[]).map((m) => userPath(m)));
  // The SAE first: cheap, and the most likely thing to be wrong.
  const sae = await loadSaeForMeasure(v.sae, { step });

  let acts: Matrix;
  let similarity: { name: string; matrix: Matrix }[];
  let layerName: string | null = null;
  if (v.data !== undefined) {
    check(
      (v.similarity as string[]).length === 0,
      "--similarity goes with --acts; with --data the manifest's similarity sources are used",
    );
    const data = await manifestData(v.data);
    const names = data.layers.map((l) => l.layer);
    let layer = data.layers[0];
    if (v.layer !== undefined) {
      const found = data.layers.find((l) => l.layer === v.layer);
      check(found, `layer "${v.layer}" is not in ${v.data}`, `its layers: ${names.join(", ")}`);
      layer = found;
    } else {
      check(
        data.layers.length === 1,
        `${v.data} has several layers: choose one with --layer (${names.join(", ")})`,
      );
    }
    layerName = layer.layer;
    const s = layer.eval;
    acts = { path: s.dir, n: s.n, d: s.d, sha256: s.sha256, all: () => s.all() };
    similarity = data.similarity.map((x) => ({
      name: x.name,
      matrix: { path: x.eval.dir, n: x.eval.n, d: x.eval.d, sha256: x.eval.sha256, all: () => x.eval.all() },
    }));
  } else {
    check(v.layer === undefined, "--layer goes with --data MANIFEST");
    acts = await openMatrix(v.acts!, "--acts");
    similarity = [];
    for (const spec of v.similarity as string[]) {
      const eq = spec.indexOf("=");
      check(eq > 0, `--similarity "${spec}": expected NAME=STORE`);
      const name = spec.slice(0, eq).trim();
      check(/^[\w.-]+$/.test(name), `--similarity "${spec}": name must be letters, digits, . _ -`);
      similarity.push({ name, matrix: await openMatrix(spec.slice(eq + 1), `--similarity ${name}`) });
    }
    if (similarity.length === 0) io.err("monobench: no --similarity source: MS is skipped");
  }

  const backend = await selectBackend(v.backend as BackendName, { notice: io.err });
  let out;
  try {
    out = await measureSae(backend, sae, { acts, layer: layerName, manifest: v.data ?? null, similarity }, {
      useThreshold: !v["no-threshold"],
      reconBatch,
      log: (l) => io.err(`monobench: ${l}`),
    });
  } finally {
    backend.destroy();
  }
  io.out(formatMeasure(out.report));
  for (
    const [path, text] of [[v.out, () => reportJson(out.report)], [v.scores, () => scoresCsv(out)]] as const
  ) {
    if (path === undefined) continue;
    await Deno.mkdir(dirname(path), { recursive: true });
    await atomicWrite(path, text());
    io.out(`wrote ${path}`);
  }
  return 0;
}

/** Run the CLI and map errors to exit codes (2: MonobenchError, 3: unexpected). */
export function main(argv: string[], io: Io = defaultIo): Promise<number> {
  return runCli(() => run(argv, io), io);
}

if (import.meta.main) {
  enterCallerCwd();
  Deno.exit(await main(Deno.args));
}
