/** A user SAE variant in its own file plugs into the registry, the trainer, the grid and the CLI. */
import assert from "node:assert/strict";
import "../examples/matryoshka_topk.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { selectCases } from "../src/grid/cases.ts";
import { getSae, listSaes, registerSae } from "../src/sae/registry.ts";
import { encodeDataset, plantedSparseData, trainSae } from "../src/train/mod.ts";
import { MonobenchError } from "../src/util/errors.ts";

Deno.test("plugin: the example variant trains, encodes with per-sample TopK and joins the grid", async () => {
  assert.ok(listSaes().includes("matryoshka-topk"));
  const data = plantedSparseData(512, 24, 48, 3, 3);
  const r = await trainSae(new CpuBackend(), data.x, {
    variant: "matryoshka-topk",
    d: 24,
    expansion: 4,
    k: 4,
    steps: 40,
    batchSize: 64,
    warmupSteps: 4,
    lr: "paper",
  });
  assert.ok(r.history.length > 0 && r.history.at(-1)!.loss < r.history[0].loss, "loss decreases");
  const codes = await encodeDataset(new CpuBackend(), r.params, data.x.subarray(0, 100 * 24));
  assert.equal(codes.kind, "csr");
  if (codes.kind === "csr") {
    for (let b = 0; b < 100; b++) {
      assert.ok(codes.rowPtr[b + 1] - codes.rowPtr[b] <= 4, "at most K per sample");
    }
  }
  const { cases } = selectCases("smoke", { extraSaes: ["matryoshka-topk"], knownSaes: listSaes() });
  assert.deepEqual(
    cases.filter((c) => c.sae === "matryoshka-topk").map((c) => c.id),
    ["matryoshka-topk-last-x1-k20", "matryoshka-topk-last-x2-k20"],
  );
  assert.throws(
    () => registerSae(getSae("matryoshka-topk")),
    MonobenchError,
    "no silent double registration",
  );
});

Deno.test("plugin: the CLI loads a variant module with --sae-module and lists its cases", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../tasks/reproduce.ts", import.meta.url).pathname,
      "--sae-module",
      new URL("../examples/matryoshka_topk.ts", import.meta.url).pathname,
      "--sae",
      "matryoshka-topk",
      "--preset",
      "smoke",
      "--list",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(text, /matryoshka-topk-last-x2-k20/);
  const bad = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../tasks/reproduce.ts", import.meta.url).pathname,
      "--sae",
      "nope",
      "--list",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(bad.code, 2);
  assert.match(new TextDecoder().decode(bad.stderr), /nope/);
});
