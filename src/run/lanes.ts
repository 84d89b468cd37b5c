/**
 * Lanes: (case, seed) units trained side by side, one Web Worker per lane, each with its own
 * backend of `threads` threads. The default preset's units are small (B·ω of a few million):
 * there a fork-join per op costs more than it saves, and two one-thread lanes trained 1.1–1.8× as
 * many units per second as one two-thread backend on two cores (`deno task bench:lanes`). Large
 * units keep one lane with every thread (see {@link autoLanes}).
 *
 * - Each lane opens the run's activation stores itself (they are directories, see
 *   {@link dataSpec}) and runs {@link runCase}, which writes the unit's files atomically, exactly
 *   as a sequential run does: the files, resume and provenance do not depend on the lane count.
 *   A unit's numbers depend only on the lane backend (its thread count is part of the device).
 * - Units are handed out in run order to whichever lane is free.
 * - On the first error the other lanes stop at their next training step (their units stay
 *   resumable) and the error is raised in the caller as it was thrown in the lane.
 * - Lanes are closed only together, once none is working: terminating one worker while another
 *   is inside onnxruntime has been seen to corrupt the process heap.
 */
import type { BackendName } from "../backend/select.ts";
import type { BenchCase } from "../grid/cases.ts";
import type { CaseResult, LayerResult } from "../types.ts";
import { MonobenchError } from "../util/errors.ts";
import type { MonobenchConfig } from "./config.ts";
import type { RunData } from "./data.ts";
import type { CaseProgress } from "./pipeline.ts";
import type { SoftwareInfo } from "./provenance.ts";

/** The backend every lane builds for itself. */
export interface LaneBackend {
  name: BackendName;
  threads: number;
}

/** A run's data as store directories, for a lane to open again. */
export interface DataSpec {
  layers: { layer: string; sourceLayer: string; d: number; train: string; eval: string }[];
  similarity: { name: string; eval: string }[];
  description: string;
  model: string | null;
  origin?: RunData["origin"];
}

export function dataSpec(data: RunData): DataSpec {
  return {
    layers: data.layers.map((l) => ({
      layer: l.layer,
      sourceLayer: l.sourceLayer,
      d: l.d,
      train: l.train.dir,
      eval: l.eval.dir,
    })),
    similarity: data.similarity.map((s) => ({ name: s.name, eval: s.eval.dir })),
    description: data.description,
    model: data.model,
    origin: data.origin,
  };
}

/** Backends that lanes apply to: the CPU ones (a GPU is one device, and blas threads process-wide). */
export const LANE_BACKENDS = ["cpu-mt", "cpu"] as const satisfies readonly BackendName[];

export function isLaneBackend(name: string): name is (typeof LANE_BACKENDS)[number] {
  return (LANE_BACKENDS as readonly string[]).includes(name);
}

/** Largest B·ω of a unit for which `auto` uses one lane per thread. */
export const LANE_MAX_BATCH_WIDTH = 2 ** 22;

/**
 * Lanes for `auto`: one per thread on a CPU backend when every unit is small (batch × width ≤
 * {@link LANE_MAX_BATCH_WIDTH}; at the default preset's sizes one-thread lanes trained 1.1–1.8× as
 * many units per second as one multi-threaded backend), else one; never more than the units.
 */
export function autoLanes(
  backend: string,
  threads: number,
  units: number,
  batchSize: number,
  maxWidth: number,
): number {
  if (!isLaneBackend(backend) || threads < 2) return 1;
  if (batchSize * maxWidth > LANE_MAX_BATCH_WIDTH) return 1;
  return Math.max(1, Math.min(threads, units));
}

/**
 * The lanes of a run on `backend`: `wanted` (`--lanes`; null = {@link autoLanes}), at most one per
 * unit, each with its share of `threads`. More than one lane on a backend that is not a CPU one is
 * refused when asked for, and falls back to one under `auto`.
 */
export function resolveLanes(
  wanted: number | null,
  backend: string,
  threads: number,
  units: number,
  batchSize: number,
  maxWidth: number,
): { count: number; backend: LaneBackend } {
  let count = wanted ?? autoLanes(backend, threads, units, batchSize, maxWidth);
  if (count > 1 && !isLaneBackend(backend)) {
    if (wanted !== null) {
      throw new MonobenchError(
        `--lanes ${wanted}: the ${backend} backend trains one unit at a time`,
        `lanes apply to ${LANE_BACKENDS.join(" and ")}; drop --lanes or choose one of them`,
      );
    }
    count = 1;
  }
  count = Math.max(1, Math.min(count, units));
  return {
    count,
    backend: {
      name: isLaneBackend(backend) ? backend : "cpu",
      threads: Math.max(1, Math.floor(threads / count)),
    },
  };
}

/** Parse `--lanes`: "auto" (null) or a positive integer. */
export function parseLanes(v: string): number | null {
  const t = v.trim();
  if (t === "auto") return null;
  const n = Number(t);
  if (t === "" || !Number.isSafeInteger(n) || n < 1 || n > 256) {
    throw new MonobenchError(`--lanes must be "auto" or an integer from 1 to 256, got "${v}"`);
  }
  return n;
}

/** What a lane needs to run units (sent once; everything in it survives structured cloning). */
export interface LaneInit {
  type: "init";
  backend: LaneBackend;
  data: DataSpec;
  config: MonobenchConfig;
  configHash: string;
  software: SoftwareInfo;
  outDir: string;
  /** Set to 1 by the caller to stop every lane at its next step. */
  abort: Int32Array;
}

export interface LaneUnit {
  type: "unit";
  c: BenchCase;
  seed: number;
  index: number;
  total: number;
  layer: LayerResult;
}

/** Progress events a lane forwards (the method and its arguments, the case index last). */
export type LaneEvent =
  | { m: "log"; a: [string] }
  | { m: "beginCase"; a: [number, string, number, string] }
  | { m: "setPhase"; a: [string, number] }
  | { m: "step"; a: [number] }
  | { m: "endCase"; a: [string] }
  | { m: "skipCase"; a: [number] };

export type LaneReply =
  | { type: "ready"; description: string }
  | { type: "progress"; index: number; ev: LaneEvent }
  | { type: "done"; index: number; result: CaseResult }
  | { type: "aborted"; index: number }
  | { type: "closed" }
  | { type: "error"; index: number; monobench: boolean; message: string; hint?: string; stack?: string };

interface Lane {
  worker: Worker;
  /** Resolves the pending request (init, unit or close). */
  settle: ((r: LaneReply) => void) | null;
}

function replyOf(lane: Lane): Promise<LaneReply> {
  return new Promise((res) => (lane.settle = res));
}

function laneError(r: Extract<LaneReply, { type: "error" }>): Error {
  if (r.monobench) return new MonobenchError(r.message, r.hint);
  const e = new Error(r.message);
  if (r.stack) e.stack = r.stack;
  return e;
}

export interface LaneRun {
  lanes: number;
  backend: LaneBackend;
  data: RunData;
  config: Readonly<MonobenchConfig>;
  configHash: string;
  software: SoftwareInfo;
  outDir: string;
  progress?: CaseProgress;
}

/**
 * Run `units` (index = their 1-based place among `total`) in `run.lanes` lanes; `onResult` gets
 * each result as it finishes (in completion order).
 */
export async function runInLanes(
  units: readonly { c: BenchCase; seed: number; index: number; layer: LayerResult }[],
  total: number,
  run: LaneRun,
  onResult: (index: number, result: CaseResult) => Promise<void> | void,
): Promise<void> {
  const count = Math.max(1, Math.min(run.lanes, units.length));
  const abort = new Int32Array(new SharedArrayBuffer(4));
  const lanes: Lane[] = [];
  const init: LaneInit = {
    type: "init",
    backend: run.backend,
    data: dataSpec(run.data),
    config: run.config as MonobenchConfig,
    configHash: run.configHash,
    software: run.software,
    outDir: run.outDir,
    abort,
  };
  let failure: Error | null = null;
  const fail = (e: Error) => {
    if (!failure) failure = e;
    Atomics.store(abort, 0, 1);
  };
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL("./lane_worker.ts", import.meta.url), { type: "module" });
    const lane: Lane = { worker, settle: null };
    worker.onmessage = (ev: MessageEvent<LaneReply>) => {
      const r = ev.data;
      if (r.type === "progress") {
        const p = run.progress;
        if (!p) return;
        const ev2 = r.ev;
        if (ev2.m === "log") p.log(...ev2.a);
        else if (ev2.m === "beginCase") p.beginCase(...ev2.a);
        else if (ev2.m === "setPhase") p.setPhase(ev2.a[0], ev2.a[1], r.index);
        else if (ev2.m === "step") p.step(ev2.a[0], r.index);
        else if (ev2.m === "skipCase") p.skipCase(ev2.a[0]);
        else p.endCase(ev2.a[0], r.index);
        return;
      }
      const s = lane.settle;
      lane.settle = null;
      s?.(r);
    };
    worker.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      const s = lane.settle;
      lane.settle = null;
      s?.({ type: "error", index: 0, monobench: false, message: `a lane failed: ${ev.message}` });
    };
    lanes.push(lane);
  }
  try {
    // Start every lane; a lane that cannot start fails the run before any unit.
    const ready = await Promise.all(lanes.map((l) => {
      const p = replyOf(l);
      l.worker.postMessage(init);
      return p;
    }));
    for (const r of ready) if (r.type === "error") fail(laneError(r));
    let next = 0;
    const work = async (lane: Lane) => {
      while (!failure && next < units.length) {
        const u = units[next++];
        const p = replyOf(lane);
        const msg: LaneUnit = { type: "unit", c: u.c, seed: u.seed, index: u.index, total, layer: u.layer };
        lane.worker.postMessage(msg);
        const r = await p;
        if (r.type === "done") {
          try {
            await onResult(r.index, r.result);
          } catch (e) {
            fail(e as Error);
          }
        } else if (r.type === "error") {
          fail(laneError(r));
        }
      }
    };
    if (!failure) await Promise.all(lanes.map(work));
  } finally {
    // Every lane is idle here: close their backends, then end the workers together.
    await Promise.all(lanes.map(async (l) => {
      const p = replyOf(l);
      l.worker.postMessage({ type: "close" });
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([p, new Promise((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
    }));
    for (const l of lanes) l.worker.terminate();
  }
  if (failure) throw failure;
}
