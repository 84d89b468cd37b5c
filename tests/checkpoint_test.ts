import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import { resolveSaeConfig } from "../src/sae/config.ts";
import { getSae } from "../src/sae/registry.ts";
import "../src/sae/mod.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  loadSae,
  loadTrainCheckpoint,
  plantedSparseData,
  readSafetensors,
  saeLensConfig,
  saveSae,
  saveTrainCheckpoint,
  type TrainInput,
  trainSae,
  writeSafetensors,
} from "../src/train/mod.ts";

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "monobench-ck-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function header(obj: unknown, data: Uint8Array, hlenOverride?: number): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(obj));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(hlenOverride ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const mbErr = (re: RegExp) => (e: Error) => e instanceof MonobenchError && re.test(e.message);

Deno.test("safetensors: round trip of several dtypes with metadata, 8-byte aligned data", async () => {
  const f32 = new Float32Array([1.5, -2, 3.25, NaN, Infinity, 0]);
  const u32 = new Uint32Array([0, 1, 4294967295]);
  const i32 = new Int32Array([-7, 8]);
  const f64 = new Float64Array([Math.PI]);
  const bytes = encodeSafetensors(
    {
      a: { shape: [2, 3], data: f32 },
      b: { shape: [3], data: u32 },
      c: { shape: [2, 1], data: i32 },
      e: { shape: [], data: f64 },
    },
    { step: "7", note: "hi" },
  );
  const hlen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal((8 + hlen) % 8, 0);
  const f = decodeSafetensors(bytes);
  assert.deepEqual(f.metadata, { step: "7", note: "hi" });
  assert.deepEqual(f.tensors.a.shape, [2, 3]);
  assert.equal(f.tensors.a.dtype, "F32");
  assert.deepEqual(Array.from(f.tensors.a.data as Float32Array), Array.from(f32));
  assert.deepEqual(f.tensors.b.data, u32);
  assert.deepEqual(f.tensors.c.data, i32);
  assert.deepEqual(f.tensors.e.data, f64);
  assert.deepEqual(f.tensors.e.shape, []);
  await withTmp(async (dir) => {
    await writeSafetensors(`${dir}/x.safetensors`, { w: { shape: [2], data: new Float32Array([1, 2]) } });
    const r = await readSafetensors(`${dir}/x.safetensors`);
    assert.deepEqual(r.tensors.w.data, new Float32Array([1, 2]));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["x.safetensors"], "no temp files left");
    await assert.rejects(readSafetensors(`${dir}/missing.safetensors`), mbErr(/missing file/));
  });
  // F16 / BF16 are widened on read.
  const half = new Uint16Array([0x3c00, 0xc000, 0x3555]); // 1, -2, ~0.333
  const bf = new Uint16Array([0x3f80, 0xc040]); // 1, -3
  const hb = decodeSafetensors(header({
    h: { dtype: "F16", shape: [3], data_offsets: [0, 6] },
    g: { dtype: "BF16", shape: [2], data_offsets: [6, 10] },
  }, new Uint8Array([...new Uint8Array(half.buffer), ...new Uint8Array(bf.buffer)])));
  assert.deepEqual(Array.from(hb.tensors.h.data as Float32Array).map((v) => +v.toFixed(3)), [1, -2, 0.333]);
  assert.deepEqual(Array.from(hb.tensors.g.data as Float32Array), [1, -3]);
});

Deno.test("safetensors: malformed files are rejected with MonobenchError", () => {
  const good = encodeSafetensors({ a: { shape: [2], data: new Float32Array([1, 2]) } });
  const data8 = new Uint8Array(8);
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty", new Uint8Array(3), /only 3 bytes/],
    ["truncated data", good.slice(0, good.length - 1), /outside|bytes/],
    ["header too long", header({}, new Uint8Array(0), 1000), /exceeds the file size/],
    [
      "bad JSON",
      (() => {
        const b = header({ a: 1 }, data8);
        b[9] = 0x7b;
        b[10] = 0x7b;
        return b;
      })(),
      /not valid JSON/,
    ],
    ["not an object", header([1, 2], new Uint8Array(0)), /not an object/],
    [
      "unknown dtype",
      header({ a: { dtype: "Q7", shape: [2], data_offsets: [0, 8] } }, data8),
      /unsupported dtype Q7/,
    ],
    ["bad shape", header({ a: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, data8), /bad shape/],
    ["size mismatch", header({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, data8), /needs 12/],
    ["offsets outside", header({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, data8), /outside/],
    [
      "overlap",
      header({
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
      }, data8),
      /overlaps/,
    ],
    ["hole", header({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, data8), /hole/],
    ["trailing", header({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, data8), /trailing/],
    ["bad metadata", header({ __metadata__: { a: 1 } }, new Uint8Array(0)), /metadata a is not a string/],
  ];
  for (const [name, bytes, re] of cases) {
    assert.throws(() => decodeSafetensors(bytes, "f.safetensors"), (e: Error) => {
      assert.ok(e instanceof MonobenchError, `${name}: ${e}`);
      assert.match(e.message, re, name);
      assert.match(e.message, /^f\.safetensors: malformed safetensors/);
      return true;
    });
  }
});

const base: TrainInput = {
  variant: "batchtopk",
  width: 64,
  k: 1,
  steps: 40,
  batchSize: 48,
  warmupSteps: 5,
  thresholdStartStep: 8,
  deadAfterTokens: 150, // AuxK kicks in during the run
  seed: 5,
};

Deno.test("saveSae/loadSae: SAELens layout, orientation, threshold vector, round trip", async () => {
  const data = plantedSparseData(300, 8, 16, 2, 1);
  const res = await trainSae(new CpuBackend(), data.x, { ...base, d: 8 });
  const p = res.params;
  assert.ok(p.threshold > 0);
  await withTmp(async (dir) => {
    await saveSae(`${dir}/sae`, p);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/sae/cfg.json`));
    assert.equal(cfg.architecture, "jumprelu");
    assert.equal(cfg.d_in, 8);
    assert.equal(cfg.d_sae, 64);
    assert.equal(cfg.dtype, "float32");
    assert.equal(cfg.normalize_activations, "none");
    assert.equal(cfg.monobench.config.variant, "batchtopk");
    assert.equal(cfg.monobench.threshold, p.threshold);
    const st = await readSafetensors(`${dir}/sae/sae_weights.safetensors`);
    assert.deepEqual(st.tensors.W_enc.shape, [8, 64]);
    assert.deepEqual(st.tensors.W_dec.shape, [64, 8]);
    assert.deepEqual(st.tensors.b_enc.shape, [64]);
    assert.deepEqual(st.tensors.b_dec.shape, [8]);
    assert.deepEqual(st.tensors.threshold.shape, [64]);
    assert.ok((st.tensors.threshold.data as Float32Array).every((t) => t === Math.fround(p.threshold)));
    // W_enc[i, j] (SAELens) = Wenc[j, i] (ours).
    assert.equal((st.tensors.W_enc.data as Float32Array)[3 * 64 + 5], p.Wenc[5 * 8 + 3]);
    const q = await loadSae(`${dir}/sae`);
    assert.deepEqual(q, p);
    // A plain SAELens config (no monobench block) loads too.
    delete cfg.monobench;
    await Deno.writeTextFile(`${dir}/sae/cfg.json`, JSON.stringify(cfg));
    const r = await loadSae(`${dir}/sae`);
    assert.equal(r.cfg.variant, "batchtopk");
    assert.equal(r.threshold, Math.fround(p.threshold));
    assert.deepEqual(r.Wenc, p.Wenc);
    // Corrupt files.
    await Deno.writeTextFile(`${dir}/sae/cfg.json`, "{not json");
    await assert.rejects(loadSae(`${dir}/sae`), mbErr(/malformed JSON/));
    await Deno.writeTextFile(`${dir}/sae/cfg.json`, JSON.stringify({ ...cfg, d_in: 9 }));
    await assert.rejects(loadSae(`${dir}/sae`), mbErr(/W_enc has shape \[8, 64\], expected \[9, 64\]/));
    await Deno.writeTextFile(`${dir}/sae/cfg.json`, JSON.stringify({ ...cfg, architecture: "gated" }));
    await assert.rejects(loadSae(`${dir}/sae`), mbErr(/unsupported architecture/));
    await assert.rejects(loadSae(`${dir}/nothing`), mbErr(/no SAE checkpoint/));
  });
  // topk and relu architectures.
  for (const [variant, arch] of [["topk", "topk"], ["relu", "standard"]]) {
    const r = await trainSae(new CpuBackend(), data.x, { ...base, variant, d: 8, steps: 10 });
    await withTmp(async (dir) => {
      await saveSae(dir + "/s", r.params);
      const cfg = JSON.parse(await Deno.readTextFile(`${dir}/s/cfg.json`));
      assert.equal(cfg.architecture, arch);
      if (arch === "topk") assert.equal(cfg.k, 1);
      assert.deepEqual(await loadSae(dir + "/s"), r.params);
    });
  }
});

Deno.test("resume: crash after s steps + resume to 2s is bit-identical to an uninterrupted run", async () => {
  // n not a multiple of the batch size (partial batches), reshuffling, AuxK and threshold active.
  const data = plantedSparseData(200, 8, 16, 2, 2);
  for (const extra of [{ reshuffle: true }, { variant: "matryoshka", k: 2 }] as Partial<TrainInput>[]) {
    const cfg = { ...base, d: 8, ...extra };
    const full = await trainSae(new CpuBackend(), data.x, cfg, { syncEvery: 7 });
    assert.ok(full.deadTrain > 0 || full.history.some((h) => h.dead > 0), "AuxK exercised");
    await withTmp(async (dir) => {
      const ck = `${dir}/run`;
      await assert.rejects(
        trainSae(new CpuBackend(), data.x, cfg, {
          checkpointDir: ck,
          checkpointEvery: 20,
          syncEvery: 7,
          onProgress: (p) => {
            if (p.step >= 28) throw new Error("simulated crash");
          },
        }),
        /simulated crash/,
      );
      const state = await loadTrainCheckpoint(ck);
      assert.equal(state.step, 20);
      // A fresh run into the same directory is refused (it would destroy the checkpoint).
      await assert.rejects(
        trainSae(new CpuBackend(), data.x, cfg, { checkpointDir: ck }),
        mbErr(/already holds/),
      );
      const resumed = await trainSae(new CpuBackend(), data.x, cfg, { resumeDir: ck, syncEvery: 7 });
      assert.equal(resumed.resumedFrom, 20);
      assert.deepEqual(resumed.params, full.params, "bit-identical final params");
      const final = await loadTrainCheckpoint(ck);
      assert.equal(final.step, cfg.steps);
      assert.deepEqual(await loadSae(ck), full.params);
      // History continues across the resume.
      assert.deepEqual(resumed.history.map((h) => h.step), [7, 14, 20, 21, 28, 35, 40]);
    });
  }
});

Deno.test("resume: mismatched config, different data, corrupt state → MonobenchError", async () => {
  const data = plantedSparseData(200, 8, 16, 2, 3);
  const cfg = { ...base, d: 8, steps: 20 };
  await withTmp(async (dir) => {
    const ck = `${dir}/run`;
    await trainSae(new CpuBackend(), data.x, cfg, { checkpointDir: ck, checkpointEvery: 10 });
    await assert.rejects(
      trainSae(new CpuBackend(), data.x, { ...cfg, k: 2 }, { resumeDir: ck }),
      mbErr(/config differs \(sae\.k: checkpoint 1 vs requested 2\)/),
    );
    const other = plantedSparseData(200, 8, 16, 2, 4);
    await assert.rejects(
      trainSae(new CpuBackend(), other.x, cfg, { resumeDir: ck }),
      mbErr(/different data/),
    );
    await assert.rejects(
      trainSae(new CpuBackend(), data.x, cfg, { resumeDir: `${dir}/none` }),
      mbErr(/no resumable/),
    );
    // Corrupt state.safetensors.
    const st = await Deno.readFile(`${ck}/state.safetensors`);
    await Deno.writeFile(`${ck}/state.safetensors`, st.slice(0, st.length - 10));
    await assert.rejects(loadTrainCheckpoint(ck), mbErr(/malformed safetensors/));
    // Inconsistent step between state.json and state.safetensors.
    await Deno.writeFile(`${ck}/state.safetensors`, st);
    const j = JSON.parse(await Deno.readTextFile(`${ck}/state.json`));
    await Deno.writeTextFile(`${ck}/state.json`, JSON.stringify({ ...j, step: 10 }));
    await assert.rejects(loadTrainCheckpoint(ck), mbErr(/does not match/));
    await Deno.writeTextFile(
      `${ck}/state.json`,
      JSON.stringify({ ...j, config: { ...j.config, sae: { ...j.config.sae, width: -1 } } }),
    );
    await assert.rejects(loadTrainCheckpoint(ck), mbErr(/bad config/));
    await Deno.writeTextFile(`${ck}/state.json`, "[]");
    await assert.rejects(loadTrainCheckpoint(ck), mbErr(/expected a JSON object/));
    // NaN inside the saved state is refused.
    await Deno.writeTextFile(`${ck}/state.json`, JSON.stringify(j));
    const f = decodeSafetensors(st);
    (f.tensors["adam_v.bdec"].data as Float32Array)[0] = NaN;
    await Deno.writeFile(`${ck}/state.safetensors`, encodeSafetensors(f.tensors as never, f.metadata));
    await assert.rejects(loadTrainCheckpoint(ck), mbErr(/adam_v\.bdec: non-finite/));
    // overwrite: true starts afresh in the same directory.
    const again = await trainSae(new CpuBackend(), data.x, cfg, { checkpointDir: ck, overwrite: true });
    assert.deepEqual(await loadSae(ck), again.params);
  });
});

Deno.test("atomic checkpoint directory: a crash between renames leaves <dir>.prev, which loads", async () => {
  const data = plantedSparseData(100, 8, 16, 2, 5);
  const res = await trainSae(new CpuBackend(), data.x, { ...base, d: 8, steps: 10 });
  await withTmp(async (dir) => {
    await saveSae(`${dir}/s`, res.params);
    await saveSae(`${dir}/s`, res.params); // replace: no leftovers
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["s"]);
    await Deno.rename(`${dir}/s`, `${dir}/s.prev`);
    assert.deepEqual(await loadSae(`${dir}/s`), res.params);
    await saveSae(`${dir}/s`, res.params);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["s"]);
  });
  // Sanity: random params with a NaN are refused before anything is written.
  await withTmp(async (dir) => {
    const bad = { ...res.params, bdec: res.params.bdec.map((v, i) => (i === 0 ? NaN : v)) };
    await assert.rejects(saveSae(`${dir}/s`, bad), mbErr(/bdec: non-finite/));
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

// SAELens's loaders, as read in its source (v5.11 SAEConfig + handle_config_defaulting; v6.18
// handle_pre_6_0_config and the jumprelu / topk / standard inference classes): fields v5 needs
// after its defaulting, and the tensors each architecture's strict load_state_dict expects.
const SAELENS5_REQUIRED: Record<string, (v: unknown) => boolean> = {
  architecture: (v) => ["standard", "gated", "jumprelu", "topk"].includes(v as string),
  d_in: Number.isInteger,
  d_sae: Number.isInteger,
  context_size: Number.isInteger,
  model_name: (v) => typeof v === "string",
  hook_name: (v) => typeof v === "string",
  hook_layer: Number.isInteger,
  hook_head_index: (v) => v === null || Number.isInteger(v),
  dataset_path: (v) => typeof v === "string",
  dtype: (v) => v === "float32",
  activation_fn_str: (v) => v === "relu" || v === "topk",
  apply_b_dec_to_input: (v) => v === true,
  finetuning_scaling_factor: (v) => v === false,
  prepend_bos: (v) => typeof v === "boolean",
  dataset_trust_remote_code: (v) => typeof v === "boolean",
  normalize_activations: (v) => v === "none",
  device: (v) => typeof v === "string",
  sae_lens_training_version: (v) => v === null || typeof v === "string",
};
const SAELENS_TENSORS: Record<string, string[]> = {
  jumprelu: ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"],
  topk: ["W_dec", "W_enc", "b_dec", "b_enc"],
  standard: ["W_dec", "W_enc", "b_dec", "b_enc"],
};

Deno.test("cfg.json: SAELens 5.x required fields, a pre-6.0 config SAELens 6 converts, exact tensor sets", async () => {
  const rng = new Rng(3);
  const d = 6, width = 64;
  await withTmp(async (dir) => {
    for (const variant of ["batchtopk", "matryoshka", "topk", "relu"]) {
      const cfg = resolveSaeConfig(getSae(variant), { variant, d, width, k: 3 });
      const rand = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
      const params = {
        cfg,
        Wenc: rand(width * d),
        benc: rand(width),
        Wdec: rand(width * d),
        bdec: rand(d),
        threshold: variant === "relu" || variant === "topk" ? -1 : 0.25,
        normFactor: 2,
      };
      const origin = {
        modelName: "clip-vit-large-patch14-336",
        hookName: "post_projection",
        hookLayer: -1,
        datasetPath: "imagenet val",
      };
      for (const [tag, o] of [["placeholders", {}], ["origin", origin]] as const) {
        const at = `${dir}/${variant}-${tag}`;
        await saveSae(at, params, {}, o);
        const c = JSON.parse(await Deno.readTextFile(`${at}/cfg.json`));
        for (const [k, ok] of Object.entries(SAELENS5_REQUIRED)) {
          assert.ok(k in c && ok(c[k]), `${variant}/${tag}: SAELens 5 field ${k} = ${JSON.stringify(c[k])}`);
        }
        // No sae_lens_version: SAELens 6 takes its pre-6.0 path, which moves these into metadata.
        assert.ok(!("sae_lens_version" in c) && !("metadata" in c));
        const arch = getSae(variant).architecture;
        assert.equal(c.architecture, arch);
        if (arch === "topk") {
          assert.equal(c.activation_fn_str, "topk");
          assert.deepEqual(c.activation_fn_kwargs, { k: 3 }); // v5 TopK, and v6's topk conversion
          assert.equal(c.k, 3);
        } else assert.equal(c.activation_fn_str, "relu");
        if (tag === "origin") {
          assert.deepEqual(
            [c.model_name, c.hook_name, c.hook_layer, c.dataset_path, c.context_size],
            ["clip-vit-large-patch14-336", "post_projection", -1, "imagenet val", 1],
          );
        } else {
          assert.deepEqual(
            [c.model_name, c.hook_name, c.hook_layer, c.dataset_path, c.context_size, c.hook_head_index],
            ["unknown", "unknown", -1, "unknown", 1, null],
          );
        }
        const st = await readSafetensors(`${at}/sae_weights.safetensors`);
        assert.deepEqual(Object.keys(st.tensors).sort(), SAELENS_TENSORS[arch], `${variant}: tensor set`);
        for (const t of Object.values(st.tensors)) assert.equal(t.dtype, "F32");
        if (variant === "matryoshka") {
          // Group sizes as dictionary_learning computes them (int(f·ω), remainder last) and SAELens 6's widths.
          assert.deepEqual(c.monobench.groupSizes, [4, 8, 16, 36]);
          assert.deepEqual(c.matryoshka_widths, [4, 12, 28, 64]);
        } else {
          assert.ok(!("groupSizes" in c.monobench) && !("matryoshka_widths" in c));
        }
        assert.deepEqual(await loadSae(at), params, `${variant}: round trip`);
      }
    }
    const p = { cfg: resolveSaeConfig(getSae("batchtopk"), { variant: "batchtopk", d: 2, width: 4, k: 1 }) };
    assert.throws(
      () =>
        saeLensConfig(
          {
            ...p,
            Wenc: new Float32Array(8),
            benc: new Float32Array(4),
            Wdec: new Float32Array(8),
            bdec: new Float32Array(2),
            threshold: 0,
            normFactor: 1,
          },
          {},
          { hookLayer: 1.5 },
        ),
      mbErr(/hookLayer must be an integer/),
    );
  });
});

Deno.test("training checkpoints carry the origin they are given", async () => {
  const data = plantedSparseData(200, 8, 16, 2, 1);
  await withTmp(async (dir) => {
    await trainSae(new CpuBackend(), data.x, { ...base, d: 8, steps: 10 }, { checkpointDir: `${dir}/ck` });
    const ck = await loadTrainCheckpoint(`${dir}/ck`);
    await saveTrainCheckpoint(`${dir}/ck`, {
      ...ck,
      origin: { modelName: "m", hookName: "block_16", hookLayer: 16, datasetPath: "d" },
    });
    const c = JSON.parse(await Deno.readTextFile(`${dir}/ck/cfg.json`));
    assert.deepEqual([c.model_name, c.hook_name, c.hook_layer, c.dataset_path], ["m", "block_16", 16, "d"]);
    assert.equal(c.monobench.step, 10);
    assert.deepEqual((await loadTrainCheckpoint(`${dir}/ck`)).weights, ck.weights);
    // trainSae passes its origin option to every checkpoint it writes.
    const origin = { modelName: "mm", hookName: "post_projection", hookLayer: -1, datasetPath: "dd" };
    await trainSae(new CpuBackend(), data.x, { ...base, d: 8, steps: 10 }, {
      checkpointDir: `${dir}/ck2`,
      origin,
    });
    const c2 = JSON.parse(await Deno.readTextFile(`${dir}/ck2/cfg.json`));
    assert.deepEqual([c2.model_name, c2.hook_name, c2.hook_layer, c2.dataset_path], [
      "mm",
      "post_projection",
      -1,
      "dd",
    ]);
  });
});
