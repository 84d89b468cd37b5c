/**
 * A small fork-join pool for the multi-threaded CPU backend: `threads − 1` Web Workers plus the
 * calling thread. `run` cuts [0, n) into chunks (a few per thread); every participant takes the
 * next free chunk from a shared counter until none is left, and the caller blocks (Atomics.wait)
 * until all chunks are done. Taking chunks dynamically keeps a descheduled worker (a busy
 * machine) from stalling an op: the others finish its share. Partial results are kept per chunk
 * and added in chunk order, so reductions do not depend on who ran what.
 *
 * Dispatch: a WebAssembly kernel (all arguments numbers, see WASM_ARGS in `mt_kernels.ts`) is
 * written to a shared job board that busy workers watch with Atomics.wait, so an op starts
 * without a message (a postMessage round trip costs tens to hundreds of microseconds, several
 * times a small op). Other kernels, whose arguments hold typed arrays, are posted as messages;
 * the board then tells waiting workers to go and read them. Workers that have waited for a while
 * without a job go back to their event loop and are woken by a message.
 *
 * Arrays passed in `args` must live in SharedArrayBuffers to be seen (and written) by the
 * workers; plain numbers, booleans and small arrays are copied.
 */
import { type Args, KERNELS, WASM_ARGS, WASM_KERNEL_NAMES } from "./mt_kernels.ts";
import type { WasmInit } from "./wasm/heap.ts";

export function sharedF32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(Math.max(n, 1) * 4), 0, n);
}

export function sharedU32(n: number): Uint32Array {
  return new Uint32Array(new SharedArrayBuffer(Math.max(n, 1) * 4), 0, n);
}

/** Threads to use: MONOBENCH_THREADS when set, else the number of logical CPUs. */
export function defaultThreads(): number {
  let env: string | undefined;
  try {
    env = Deno.env.get("MONOBENCH_THREADS");
  } catch { /* no env permission */ }
  const n = env ? Number(env) : navigator.hardwareConcurrency;
  return Number.isInteger(n) && n >= 1 ? Math.min(n, 64) : 1;
}

/**
 * Idle workers are stopped after this long (and started again on the next op), so that a
 * program that never destroys its backend still exits.
 */
const IDLE_MS = 1000;

/** Chunks per thread: enough slack for load imbalance, few enough to keep dispatch cheap. */
const CHUNKS_PER_THREAD = 4;
const MAX_CHUNKS = 0xffff;

/** Words of the control array shared with the workers. */
export const CTL = {
  /** job << 16 | next chunk */
  NEXT: 0,
  /** chunks done */
  DONE: 1,
  /** a worker failed */
  FAILED: 2,
  /** bumped for every job posted to the board (workers wait on it) */
  SEQ: 3,
  /** what the board holds: BOARD_WASM (a kernel) or BOARD_MSG (go and read your messages) */
  MODE: 4,
  /** chunk count of the job */
  CHUNKS: 5,
} as const;
export const BOARD_WASM = 1, BOARD_MSG = 2;
/** Board layout (float64): [kernel index, arguments…]; the chunk bounds follow at BOUNDS. */
export const BOARD_ARGS = 64, BOARD_BOUNDS = BOARD_ARGS;

/** What a worker is given once: the shared control words, board, results and its loop flag. */
export interface PoolShared {
  ctl: Int32Array;
  board: Float64Array;
  res: Float64Array;
  /** 1 while worker i waits on the board, 0 while it is in its event loop. */
  looping: Int32Array;
  index: number;
}

/**
 * Take the next chunk of job `job` (control word = job << 16 | next chunk); −1 when none is
 * left or the job is over.
 */
export function takeChunk(ctl: Int32Array, job: number, n: number): number {
  for (;;) {
    const v = Atomics.load(ctl, 0);
    if ((v >>> 16) !== job) return -1;
    const c = v & 0xffff;
    if (c >= n) return -1;
    if (Atomics.compareExchange(ctl, 0, v, v + 1) === v) return c;
  }
}

export class ThreadPool {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(64));
  private readonly res = new Float64Array(new SharedArrayBuffer(8 * MAX_CHUNKS));
  private readonly board = new Float64Array(new SharedArrayBuffer(8 * (BOARD_BOUNDS + MAX_CHUNKS + 1)));
  private readonly looping: Int32Array;
  private job = 0;
  private closed = false;
  private idle: ReturnType<typeof setTimeout> | null = null;
  private readonly size: number;

  private constructor(private workers: Worker[], private readonly wasm: WasmInit | null, threads: number) {
    this.size = threads;
    this.looping = new Int32Array(new SharedArrayBuffer(4 * Math.max(threads, 1)));
  }

  /** Total threads, the caller's included. */
  get threads(): number {
    return this.size;
  }

  private shared(index: number): PoolShared {
    return { ctl: this.ctl, board: this.board, res: this.res, looping: this.looping, index };
  }

  /** Worker `index`; its first message gives it the shared words (and the WebAssembly kernels). */
  private spawn(index: number): Worker {
    const w = new Worker(new URL("./mt_worker.ts", import.meta.url).href, { type: "module" });
    Atomics.store(this.looping, index, 0);
    w.postMessage({ init: this.shared(index), wasm: this.wasm });
    return w;
  }

  /** Stop the workers after IDLE_MS without an op (an unref'd timer: it never keeps the process alive). */
  private armIdle(): void {
    if (this.idle !== null) clearTimeout(this.idle);
    const id = setTimeout(() => {
      this.idle = null;
      for (const w of this.workers) w.terminate();
      this.workers = [];
    }, IDLE_MS);
    Deno.unrefTimer(id);
    this.idle = id;
  }

  /**
   * Start `threads − 1` workers and wait until each has loaded (and instantiated the
   * WebAssembly kernels on the shared memory, when `wasm` is given).
   */
  static async create(threads: number, wasm: WasmInit | null = null): Promise<ThreadPool> {
    const pool = new ThreadPool([], wasm, threads);
    try {
      for (let i = 0; i + 1 < threads; i++) {
        const w = pool.spawn(i);
        pool.workers.push(w);
        await new Promise<void>((resolve, reject) => {
          w.onmessage = () => resolve();
          w.onerror = (e) => {
            e.preventDefault();
            reject(new Error(e.message));
          };
          w.postMessage("ping");
        });
        w.onmessage = null;
      }
    } catch (e) {
      for (const w of pool.workers) w.terminate();
      throw e;
    }
    if (pool.workers.length) pool.armIdle();
    return pool;
  }

  /** Even chunk boundaries over [0, n): about 4 per thread, each at least `grain` long. */
  chunks(n: number, grain = 1): number[] {
    const T = this.closed ? 1 : this.threads;
    const c = Math.max(1, Math.min(T === 1 ? 1 : T * CHUNKS_PER_THREAD, Math.floor(n / Math.max(grain, 1))));
    const b: number[] = [];
    for (let t = 0; t <= c; t++) b.push(Math.round((n * t) / c));
    return b;
  }

  /**
   * Chunk boundaries over [0, n) that balance a cumulative cost `cum` (cum[i] = cost before
   * item i, length n + 1), e.g. a CSR row pointer.
   */
  balanced(cum: Uint32Array | Float64Array, n: number): number[] {
    const T = this.closed ? 1 : this.threads;
    const C = T === 1 ? 1 : Math.min(n, T * CHUNKS_PER_THREAD);
    const total = cum[n] - cum[0];
    const bounds = [0];
    let i = 0;
    for (let t = 1; t < C; t++) {
      const target = cum[0] + (total * t) / C;
      while (i < n && cum[i] < target) i++;
      bounds.push(Math.max(i, bounds[bounds.length - 1]));
    }
    bounds.push(n);
    return bounds;
  }

  /**
   * Run `kernel` on each chunk [bounds[c], bounds[c + 1]) (chunk index c is passed to the
   * kernel) on all threads; returns the sum of the chunks' partial results, in chunk order.
   * Without `bounds`: even chunks of at least `grain` over [0, n).
   */
  run(kernel: string, args: Args, n: number, grain = 1, bounds?: number[]): number {
    const f = KERNELS[kernel];
    const b = bounds ?? this.chunks(n, grain);
    const C = b.length - 1;
    if (C > MAX_CHUNKS) throw new Error(`thread pool: ${C} chunks (at most ${MAX_CHUNKS})`);
    if (this.closed || C <= 1 || this.size === 1) {
      let sum = 0;
      for (let c = 0; c < C; c++) sum += f(args, b[c], b[c + 1], c);
      return sum;
    }
    // Restarted workers help once loaded; until then this thread takes every chunk itself.
    while (this.workers.length < this.size - 1) this.workers.push(this.spawn(this.workers.length));
    this.armIdle();
    const res = this.res, ctl = this.ctl, board = this.board;
    this.job = (this.job % 0x7fff) + 1;
    const job = this.job;
    // Close the counter first: a worker reading the board while it is rewritten finds no chunk.
    Atomics.store(ctl, CTL.NEXT, (Atomics.load(ctl, CTL.NEXT) & 0xffff0000) | 0xffff);
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.store(ctl, CTL.FAILED, 0);
    Atomics.store(ctl, CTL.CHUNKS, C);
    const helpers = Math.min(this.workers.length, C - 1);
    const names = WASM_ARGS[kernel];
    if (names) {
      board[0] = WASM_KERNEL_NAMES.indexOf(kernel);
      for (let i = 0; i < names.length; i++) board[1 + i] = +args[names[i]];
      for (let c = 0; c <= C; c++) board[BOARD_BOUNDS + c] = b[c];
      Atomics.store(ctl, CTL.MODE, BOARD_WASM);
      Atomics.store(ctl, CTL.NEXT, job << 16);
    } else {
      Atomics.store(ctl, CTL.MODE, BOARD_MSG);
      Atomics.store(ctl, CTL.NEXT, job << 16);
      const msg = { kernel, args, bounds: b, job, n: C };
      for (let w = 0; w < helpers; w++) this.workers[w].postMessage(msg);
    }
    Atomics.add(ctl, CTL.SEQ, 1);
    Atomics.notify(ctl, CTL.SEQ);
    if (names) {
      // Workers back in their event loop need a message to come and look.
      for (let w = 0; w < helpers; w++) {
        if (Atomics.load(this.looping, w) === 0) this.workers[w].postMessage("loop");
      }
    }
    let err: unknown = null;
    for (;;) {
      const c = takeChunk(ctl, job, C);
      if (c < 0) break;
      try {
        res[c] = f(args, b[c], b[c + 1], c);
      } catch (e) {
        err ??= e;
        res[c] = NaN;
      }
      Atomics.add(ctl, CTL.DONE, 1);
    }
    for (;;) {
      const done = Atomics.load(ctl, CTL.DONE);
      if (done >= C) break;
      Atomics.wait(ctl, CTL.DONE, done, 1000);
    }
    if (err) throw err;
    if (Atomics.load(ctl, CTL.FAILED)) throw new Error(`multi-threaded kernel ${kernel} failed in a worker`);
    let total = 0;
    for (let c = 0; c < C; c++) total += res[c];
    return total;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idle !== null) clearTimeout(this.idle);
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}
