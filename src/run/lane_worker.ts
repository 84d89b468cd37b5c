/**
 * One lane of src/run/lanes.ts: builds its backend and opens the run's stores on "init", runs
 * one (case, seed) unit per "unit" message with {@link runCase}, forwards progress, and releases
 * its backend on "close".
 */
/// <reference lib="deno.worker" />
import "../sae/mod.ts";
import type { Backend } from "../backend/types.ts";
import { selectBackend } from "../backend/select.ts";
import { ActivationStore } from "../data/store.ts";
import { MonobenchError } from "../util/errors.ts";
import type { RunData } from "./data.ts";
import type { LaneEvent, LaneInit, LaneReply, LaneUnit } from "./lanes.ts";
import { loadSaeModules } from "./modules.ts";
import { type CaseProgress, type PipelineOptions, runCase } from "./pipeline.ts";

class Aborted extends Error {}

let backend: Backend | null = null;
let opts: Omit<PipelineOptions, "progress"> | null = null;
let abort: Int32Array | null = null;

const post = (r: LaneReply) => self.postMessage(r);

async function openData(spec: LaneInit["data"]): Promise<RunData> {
  const layers = [];
  for (const l of spec.layers) {
    layers.push({
      layer: l.layer,
      sourceLayer: l.sourceLayer,
      d: l.d,
      train: await ActivationStore.open(l.train),
      eval: await ActivationStore.open(l.eval),
    });
  }
  const similarity = [];
  for (const s of spec.similarity) {
    similarity.push({ name: s.name, eval: await ActivationStore.open(s.eval) });
  }
  return { layers, similarity, description: spec.description, model: spec.model, origin: spec.origin };
}

/** Progress that forwards to the caller; steps are sent at most every 100 ms (and the last one). */
function forwarder(index: number): CaseProgress {
  let last = 0, total = 0;
  const send = (ev: LaneEvent) => post({ type: "progress", index, ev });
  return {
    log: (m) => send({ m: "log", a: [m] }),
    beginCase: (i, label, steps, phase = "step") => {
      total = steps;
      send({ m: "beginCase", a: [i, label, steps, phase] });
    },
    setPhase: (phase, steps) => {
      total = steps;
      send({ m: "setPhase", a: [phase, steps] });
    },
    step: (done) => {
      if (abort && Atomics.load(abort, 0) !== 0) throw new Aborted("stopped");
      const t = performance.now();
      if (done < total && t - last < 100) return;
      last = t;
      send({ m: "step", a: [done] });
    },
    endCase: (summary = "") => send({ m: "endCase", a: [summary] }),
    skipCase: (i) => send({ m: "skipCase", a: [i] }),
  };
}

self.onmessage = async (ev: MessageEvent<LaneInit | LaneUnit | { type: "close" }>) => {
  const m = ev.data;
  let index = 0;
  try {
    if (m.type === "init") {
      abort = m.abort;
      await loadSaeModules(m.config.saeModules);
      backend = await selectBackend(m.backend.name, { threads: m.backend.threads });
      opts = {
        backend,
        data: await openData(m.data),
        outDir: m.outDir,
        config: m.config,
        configHash: m.configHash,
        software: m.software,
      };
      post({ type: "ready", description: backend.description });
    } else if (m.type === "unit") {
      index = m.index;
      if (!opts) throw new Error("lane: unit before init");
      const result = await runCase(m.c, m.seed, m.index, m.total, m.layer, {
        ...opts,
        progress: forwarder(m.index),
      });
      post({ type: "done", index, result });
    } else if (m.type === "close") {
      backend?.destroy();
      backend = null;
      post({ type: "closed" });
    }
  } catch (e) {
    if (e instanceof Aborted) {
      post({ type: "aborted", index });
      return;
    }
    const err = e as Error;
    post({
      type: "error",
      index,
      monobench: e instanceof MonobenchError,
      message: err?.message ?? String(e),
      hint: e instanceof MonobenchError ? e.hint : undefined,
      stack: err?.stack,
    });
  }
};
