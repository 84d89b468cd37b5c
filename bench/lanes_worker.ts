/** Worker of bench/lanes_bench.ts: trains one BatchTopK SAE on synthetic rows for the given steps. */
/// <reference lib="deno.worker" />
import "../src/sae/mod.ts";
import { selectBackend } from "../src/backend/select.ts";
import type { Backend } from "../src/backend/types.ts";
import { getSae } from "../src/sae/registry.ts";
import { resolveSaeConfig } from "../src/sae/config.ts";
import { initialWeights, SaeEngine } from "../src/train/engine.ts";
import { Rng } from "../src/util/rng.ts";

export interface UnitSpec {
  d: number;
  width: number;
  batch: number;
  steps: number;
}

/** Train one unit (AuxK on, as in short runs where many latents are dead); returns its seconds. */
export async function trainUnit(be: Backend, u: UnitSpec, seed: number): Promise<number> {
  const variant = getSae("batchtopk");
  const cfg = resolveSaeConfig(variant, {
    variant: "batchtopk",
    d: u.d,
    width: u.width,
    deadAfterTokens: u.batch * 4,
  });
  const rng = new Rng(seed);
  const engine = new SaeEngine(be, variant, cfg, initialWeights(variant, cfg, rng));
  const xs = [0, 1, 2, 3].map(() => {
    const x = rng.normals(u.batch * u.d);
    for (let i = 0; i < x.length; i++) x[i] = Math.max(0, x[i]) * 0.3 + 0.1;
    return x;
  });
  const t0 = performance.now();
  for (let s = 0; s < u.steps; s++) {
    engine.forwardBackward(xs[s % 4], u.batch, { updateThreshold: true, auxk: true });
    engine.optimizerStep({ lr: 4e-4, step: s + 1, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
    await engine.readStats();
  }
  const secs = (performance.now() - t0) / 1000;
  engine.dispose();
  return secs;
}

let backend: Backend | null = null;
if (typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) {
  self.onmessage = async (ev: MessageEvent) => {
    const m = ev.data;
    if (m.type === "init") {
      backend = await selectBackend("cpu-mt", { threads: m.threads });
      self.postMessage({ type: "ready", description: backend.description });
    } else if (m.type === "unit") {
      self.postMessage({ type: "done", seconds: await trainUnit(backend!, m.unit, m.seed) });
    } else if (m.type === "close") {
      backend?.destroy();
      self.postMessage({ type: "closed" });
    }
  };
}
