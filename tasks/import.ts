/**
 * `deno task import`: convert your own arrays (.npy, torch.save .pt, raw float32, CSV) into
 * activation stores, or build a whole data manifest for `deno task reproduce --data` /
 * `deno task measure --data`.
 * Exit codes: 0 ok, 2 bad input/options, 3 unexpected error.
 */
import { defaultIo, type Io, parseOptions, runCli } from "../src/util/cli.ts";
export type { Io };
import type { StoreDType, StoreHeader } from "../src/data/store.ts";
import {
  type ArrayInput,
  importManifest,
  importStore,
  INPUT_FORMATS,
  type InputFormat,
  type InputOptions,
  parseLayerSpec,
  parseMeta,
  parseShape,
  parseSimilaritySpec,
} from "../src/io/import.ts";
import { check } from "../src/util/errors.ts";
import { enterCallerCwd } from "../src/util/paths.ts";

export const HELP = `monobench import — convert your arrays into activation stores (and data manifests)

Usage:
  deno task import [options] --out DIR FILE...
      Concatenate FILE... (rows, in the given order) into one activation store in DIR.
  deno task import [options] --manifest FILE.json --layer SPEC... --similarity NAME=FILES...
      Convert every split into a store and write a data manifest for
      \`deno task reproduce --data FILE.json\` and \`deno task measure --data FILE.json\`.

Inputs (one [N, D] matrix per file, one row per image)
  .npy                NumPy arrays: float32 / float16 / float64 (stored as float32), C or Fortran
                      order, format 1.0–3.0 (e.g. numpy.save("acts.npy", t.float().numpy()))
  .pt .pth            torch.save files holding one 2-D tensor: float32 / float16 / bfloat16 /
                      float64, contiguous or strided (torch ≥ 1.6 ZIP format, read without Python),
                      e.g. the reference's save_activations.py parts and encode_images.py output
  .bin .raw .f32 .dat raw little-endian float32, needs --shape
  .csv                numbers only, comma-separated; --header skips one header line
  Names may use * and ? (quote them); matches are taken in natural order (part2 before part10).
  A directory stands for its …_part<N>.pt / .pth / .npy files, sorted by N (files starting with
  "all" skipped), as save_activations.py writes an activations folder. Files are streamed: one
  part at a time, never all of them in memory.

Options
  --out DIR           the store directory (store mode); in manifest mode the directory for
                      the stores (default: <manifest name>-stores next to the manifest)
  --dtype T           f32 (default) or f16 (half the disk; values beyond ±65504 are refused)
  --meta KEY=VALUE    free-form metadata recorded in the store header (repeatable)
  --format F          npy | pt | raw | csv: override the extension-based detection
  --shape N,D         shape of each raw float32 file; auto,D infers N from the file size
  --header            CSV: skip the first line
  --parts             sort the inputs by part number (…_part{n}…, as the reference's shards)
  --overwrite         replace existing stores / manifest (they stay intact until the new ones
                      are complete)
Manifest mode
  --manifest FILE     the manifest JSON to write (store paths in it are relative to it)
  --layer SPEC        LAYER:[train=FILES,]eval=FILES[,source=NAME] (repeatable); LAYER names the
                      layer (letters, digits, _ or .: 11, 16, last…; "last" = the final
                      projection); FILES is a file, a folder of parts or a+b+c (concatenated);
                      NAME records your model's own layer name; without train= the layer can be
                      measured (measure, measure-reference) but not trained on
  --similarity S      NAME=FILES: embeddings of the eval images from a similarity encoder, e.g.
                      dinov2=emb/dinov2_val.npy (repeatable; same images, same order as eval)
  --description TEXT  one line describing the data, shown in reports
  --model NAME        the paper model the activations come from, as the paper tables name it
                      (e.g. siglip-so400m-14-384), so that the paper diff picks its rows
  -h, --help          this help

Examples
  deno task import --out stores/last-val acts/imagenet_val_activations_last_part*.npy --parts
  deno task import --out stores/last-train \\
      activations_dir/raw/imagenet_train_activations_clip-vit-large-patch14-336_-1_post_projection
  deno task import --out stores/x --shape auto,1024 --dtype f16 x.bin --meta model=clip-vit-l-336
  deno task import --manifest data/clip.json \\
      --layer last:train=acts/last_train.npy,eval=acts/last_val.npy,source=post_projection \\
      --similarity dinov2=emb/dinov2_val.npy --description "CLIP ViT-L/14-336, ImageNet"
`;

function describe(dir: string, h: StoreHeader, inputs: ArrayInput[]): string {
  return `${dir}: ${h.n} × ${h.d} ${h.dtype} from ${inputs.length} file(s), sha256 ${h.sha256.slice(0, 16)}…`;
}

/** Run the CLI (throws MonobenchError on bad input). */
export async function run(argv: string[], io: Io = defaultIo): Promise<number> {
  const parsed = parseOptions("import", {
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      dtype: { type: "string", default: "f32" },
      meta: { type: "string", multiple: true, default: [] },
      format: { type: "string" },
      shape: { type: "string" },
      header: { type: "boolean", default: false },
      parts: { type: "boolean", default: false },
      overwrite: { type: "boolean", default: false },
      manifest: { type: "string" },
      layer: { type: "string", multiple: true, default: [] },
      similarity: { type: "string", multiple: true, default: [] },
      description: { type: "string" },
      model: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const v = parsed.values;
  if (v.help) {
    io.out(HELP);
    return 0;
  }
  check(
    v.dtype === "f32" || v.dtype === "f16",
    `--dtype must be f32 or f16, got "${v.dtype}"`,
  );
  check(
    v.format === undefined || (INPUT_FORMATS as readonly string[]).includes(v.format),
    `--format must be one of ${INPUT_FORMATS.join(", ")}, got "${v.format}"`,
  );
  const input: InputOptions = {
    format: v.format as InputFormat | undefined,
    shape: v.shape !== undefined ? parseShape(v.shape) : undefined,
    header: v.header,
    parts: v.parts,
  };
  const common = {
    ...input,
    dtype: v.dtype as StoreDType,
    meta: parseMeta(v.meta as string[]),
    overwrite: v.overwrite,
  };
  const layers = v.layer as string[], sims = v.similarity as string[];

  if (v.manifest !== undefined) {
    check(
      parsed.positionals.length === 0,
      `manifest mode takes its files from --layer / --similarity, not as arguments (${
        parsed.positionals.join(" ")
      })`,
    );
    check(layers.length > 0, "--manifest needs at least one --layer LAYER:train=FILES,eval=FILES");
    const res = await importManifest({
      manifest: v.manifest,
      storesDir: v.out,
      description: v.description,
      model: v.model,
      layers: layers.map(parseLayerSpec),
      similarity: sims.map(parseSimilaritySpec),
    }, { ...common, log: io.err });
    for (const s of res.stores) io.out(`${s.role.padEnd(20)} ${describe(s.dir, s.header, s.inputs)}`);
    io.out(`manifest: ${res.manifest}`);
    io.out(
      `use it with: deno task reproduce --data ${v.manifest}   or   deno task measure --data ${v.manifest}`,
    );
    return 0;
  }

  check(
    layers.length === 0 && sims.length === 0 && v.description === undefined && v.model === undefined,
    "--layer, --similarity, --description and --model need --manifest FILE",
  );
  check(parsed.positionals.length > 0, "no input files", "see deno task import --help");
  check(v.out !== undefined, "--out DIR is required: the directory of the activation store to write");
  const res = await importStore(parsed.positionals, v.out, common);
  for (const i of res.inputs) io.err(`  ${i.describe}`);
  io.out(describe(v.out, res.header, res.inputs));
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
