/**
 * Worker of the multi-threaded CPU backend (see `pool.ts`): it takes chunks of the current job
 * from the shared counter until none is left, runs the kernel (`mt_kernels.ts`) on each, stores
 * the chunk's partial result and counts it done. Jobs of WebAssembly kernels come on the shared
 * board, which the worker watches with Atomics.wait; other jobs come as messages.
 */
import { type Args, KERNELS, WASM_ARGS, WASM_KERNEL_NAMES } from "./mt_kernels.ts";
import { BOARD_BOUNDS, BOARD_MSG, BOARD_WASM, CTL, type PoolShared, takeChunk } from "./pool.ts";
import { instantiate, type WasmInit } from "./wasm/heap.ts";

interface Job {
  kernel: string;
  args: Args;
  bounds: ArrayLike<number>;
  job: number;
  n: number;
}

/** After this long without a job on the board, go back to the event loop. */
const LOOP_IDLE_MS = 200;

let sh: PoolShared | null = null;

function work(j: Job): void {
  const { ctl, res } = sh!, f = KERNELS[j.kernel];
  for (;;) {
    const c = takeChunk(ctl, j.job, j.n);
    if (c < 0) break;
    try {
      res[c] = f(j.args, j.bounds[c], j.bounds[c + 1], c);
    } catch (err) {
      res[c] = NaN;
      Atomics.store(ctl, CTL.FAILED, 1);
      console.error(`monobench worker: ${j.kernel}: ${err instanceof Error ? err.message : err}`);
    }
    Atomics.add(ctl, CTL.DONE, 1);
    Atomics.notify(ctl, CTL.DONE);
  }
}

/** The WebAssembly job on the board, if one is there. */
function boardJob(): Job | null {
  const { ctl, board } = sh!;
  // The job id first: the board was complete when it was published (see ThreadPool.run).
  const next = Atomics.load(ctl, CTL.NEXT);
  if ((next & 0xffff) === 0xffff || Atomics.load(ctl, CTL.MODE) !== BOARD_WASM) return null;
  const job = next >>> 16, n = Atomics.load(ctl, CTL.CHUNKS);
  const kernel = WASM_KERNEL_NAMES[board[0]];
  const names = WASM_ARGS[kernel];
  if (!names) return null;
  const args: Args = {};
  for (let i = 0; i < names.length; i++) args[names[i]] = board[1 + i];
  return { kernel, args, bounds: board.subarray(BOARD_BOUNDS, BOARD_BOUNDS + n + 1), job, n };
}

/** Watch the board until idle, or until a job needs this worker's messages. */
function loop(): void {
  const { ctl, looping, index } = sh!;
  Atomics.store(looping, index, 1);
  let seq = Atomics.load(ctl, CTL.SEQ), since = performance.now();
  for (;;) {
    const j = boardJob();
    if (j) work(j);
    else if (Atomics.load(ctl, CTL.MODE) === BOARD_MSG && j === null && seqMsg < seq) {
      // A message job was posted: it waits in the event loop.
      Atomics.store(looping, index, 0);
      return;
    }
    for (;;) {
      const r = Atomics.wait(ctl, CTL.SEQ, seq, 50);
      const now = Atomics.load(ctl, CTL.SEQ);
      if (now !== seq) {
        seq = now;
        since = performance.now();
        break;
      }
      if (r === "timed-out" && performance.now() - since > LOOP_IDLE_MS) {
        Atomics.store(looping, index, 0);
        // A job posted while leaving is still taken (the poster saw the flag set, sent nothing).
        if (Atomics.load(ctl, CTL.SEQ) === seq) return;
        Atomics.store(looping, index, 1);
        seq = Atomics.load(ctl, CTL.SEQ);
        break;
      }
    }
  }
}

/** The board sequence number of the last message job handled. */
let seqMsg = -1;

// deno-lint-ignore no-explicit-any
const scope = self as any;
scope.onmessage = (e: MessageEvent<Job | "ping" | "loop" | { init: PoolShared; wasm: WasmInit | null }>) => {
  const m = e.data;
  if (m === "ping") {
    scope.postMessage("ready");
    return;
  }
  if (typeof m === "object" && "init" in m) {
    sh = m.init;
    if (m.wasm) instantiate(m.wasm);
    return;
  }
  if (m !== "loop") {
    seqMsg = Atomics.load(sh!.ctl, CTL.SEQ);
    work(m);
  }
  loop();
};
