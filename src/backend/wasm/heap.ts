/**
 * The WebAssembly side of the multi-threaded CPU backend: one shared linear memory (a growable
 * WebAssembly.Memory of up to 4 GiB) that holds the backend's tensors, the compiled SIMD kernels
 * (native/wasm/kernels.c, embedded in kernels_wasm.ts) and an allocator. The main thread and
 * every pool worker instantiate the same module on the same memory, so a kernel can run any
 * slice of an op on any thread.
 *
 * Tensors that do not fit (the memory is full) live in plain SharedArrayBuffers and take the
 * TypeScript kernels instead.
 */
import { WASM_BASE64 } from "./kernels_wasm.ts";

/** The kernels' exports (pointers are byte offsets into the memory). */
export interface WasmKernels {
  relu(P: number, lo: number, hi: number): void;
  center(X: number, bd: number, xc: number, d: number, lo: number, hi: number): void;
  bcast_rows(P: number, be: number, w: number, lo: number, hi: number): void;
  sumsq(t: number, lo: number, hi: number): number;
  adam(
    p: number,
    g: number,
    M: number,
    V: number,
    lo: number,
    hi: number,
    scale: number,
    beta1: number,
    beta2: number,
    stepSize: number,
    sq2: number,
    eps: number,
  ): void;
  project(W: number, G: number, d: number, lo: number, hi: number): number;
  renorm(W: number, d: number, lo: number, hi: number): void;
  collect_above(
    bits: number,
    lo: number,
    hi: number,
    loKey: number,
    pos: number,
    keys: number,
    room: number,
    cnt: number,
  ): void;
  gather_rows(
    v: number,
    w: number,
    lo: number,
    hi: number,
    t: number,
    slot: number,
    scalar: number,
    strict: number,
    mask: number,
    idx: number,
    val: number,
    e0: number,
    end: number,
    cnt: number,
  ): number;
  decode(
    rp: number,
    idx: number,
    val: number,
    W: number,
    o: number,
    bd: number,
    accumulate: number,
    groups: number,
    G: number,
    B: number,
    d: number,
    cap: number,
    lo: number,
    hi: number,
  ): void;
  decode_backward(
    rp: number,
    idx: number,
    gS: number,
    W: number,
    out: number,
    accumulate: number,
    groups: number,
    B: number,
    d: number,
    cap: number,
    lo: number,
    hi: number,
  ): void;
  latent_grads(
    cp: number,
    row: number,
    entry: number,
    gv: number,
    val: number,
    X: number,
    bd: number,
    gS: number,
    gWe: number,
    gbe: number,
    gWd: number,
    groups: number,
    B: number,
    d: number,
    cap: number,
    overwrite: number,
    lo: number,
    hi: number,
  ): void;
  bdec_cols(
    gS: number,
    W: number,
    gb: number,
    uj: number,
    us: number,
    nu: number,
    B: number,
    d: number,
    withDecodePath: number,
    accumulate: number,
    lo: number,
    hi: number,
  ): void;
  recon(
    xh: number,
    X: number,
    gS: number,
    w: number,
    c: number,
    G: number,
    n: number,
    lo: number,
    hi: number,
  ): number;
  fill_f32(t: number, value: number, lo: number, hi: number): void;
  row_kth(
    bits: number,
    w: number,
    k: number,
    cols: number,
    nc: number,
    out: number,
    scratch: number,
    lo: number,
    hi: number,
  ): void;
  aux_loss(
    X: number,
    xh: number,
    ea: number,
    gS: number,
    B: number,
    d: number,
    alpha: number,
    mean: number,
  ): number;
  csr_from_candidates(
    pos: number,
    cnt: number,
    room: number,
    T: number,
    v: number,
    w: number,
    B: number,
    thr: number,
    strict: number,
    cap: number,
    rp: number,
    idx: number,
    val: number,
  ): void;
  select_key(c: number, m: number, r: number, hist: number): number;
  pack8(B: number, ldb: number, N: number, K: number, trans: number, P: number, p0: number, p1: number): void;
  gemm(
    A: number,
    sa: number,
    sk: number,
    P: number,
    C: number,
    ldc: number,
    N: number,
    K: number,
    alpha: number,
    beta: number,
    bias: number,
    relu: number,
    lo: number,
    hi: number,
  ): void;
}

const PAGE = 65536;
/** 4 GiB: the most a 32-bit memory can address. */
const MAX_PAGES = 65536;
/** The module's own region (it has no data and no stack, but keep address 0 unused). */
const BASE = 1 << 20;
const ALIGN = 64;

/** What a thread needs to run the kernels: post it to a worker and pass it to {@link instantiate}. */
export interface WasmInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
}

let local: WasmKernels | null = null;
let localMemory: WebAssembly.Memory | null = null;

/** Instantiate the kernels on this thread (a worker, or the main thread through the heap). */
export function instantiate(init: WasmInit): WasmKernels {
  const inst = new WebAssembly.Instance(init.module, { env: { memory: init.memory } });
  local = inst.exports as unknown as WasmKernels;
  localMemory = init.memory;
  return local;
}

/** A u32 view of the memory at byte offset `off` on this thread. */
export function memU32(off: number, n: number): Uint32Array {
  return new Uint32Array(localMemory!.buffer, off, n);
}

/** This thread's kernels; throws when the thread has not been given the module. */
export function kernels(): WasmKernels {
  if (!local) throw new Error("WebAssembly kernels are not loaded on this thread");
  return local;
}

let singleton: WasmHeap | null | undefined;

/** A first-fit allocator over the memory above {@link BASE}, with coalescing free blocks. */
export class WasmHeap {
  readonly init: WasmInit;
  readonly k: WasmKernels;
  /** Every buffer object this memory has had (a grow hands out a new one over the same memory). */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private buf: SharedArrayBuffer;
  /** Free blocks, ascending offsets. */
  private free: { off: number; size: number }[] = [];
  private readonly live = new Map<number, number>();
  /** End of the used region; memory above it has never been handed out (still zero). */
  private top = BASE;
  private readonly registry = new FinalizationRegistry<number>((off) => this.release(off));

  private constructor(module: WebAssembly.Module, memory: WebAssembly.Memory) {
    this.init = { module, memory };
    this.k = instantiate(this.init);
    this.buf = memory.buffer as SharedArrayBuffer;
    this.buffers.add(this.buf);
  }

  /** The process-wide heap; null where shared WebAssembly memory is unavailable. */
  static get(): WasmHeap | null {
    if (singleton !== undefined) return singleton;
    try {
      const bin = Uint8Array.from(atob(WASM_BASE64), (c) => c.charCodeAt(0));
      const module = new WebAssembly.Module(bin);
      const memory = new WebAssembly.Memory({ initial: BASE / PAGE, maximum: MAX_PAGES, shared: true });
      singleton = new WasmHeap(module, memory);
    } catch {
      singleton = null;
    }
    return singleton;
  }

  /** Bytes handed out and not yet released. */
  get used(): number {
    let n = 0;
    for (const s of this.live.values()) n += s;
    return n;
  }

  /** The memory's current buffer (a grow replaces it; earlier views stay valid). */
  get buffer(): SharedArrayBuffer {
    const b = this.init.memory.buffer as SharedArrayBuffer;
    if (b !== this.buf) {
      this.buf = b;
      this.buffers.add(b);
    }
    return b;
  }

  /** Whether a view lies in this memory. */
  owns(a: ArrayBufferView): boolean {
    return this.buffers.has(a.buffer);
  }

  /**
   * A block of at least `bytes` bytes (64-byte aligned); null when the memory cannot grow that
   * far. `zeroed`: whether it is known to hold zeros (never handed out before).
   */
  alloc(bytes: number): { off: number; zeroed: boolean } | null {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i];
      if (f.size < size) continue;
      const off = f.off;
      if (f.size === size) this.free.splice(i, 1);
      else {
        f.off += size;
        f.size -= size;
      }
      this.live.set(off, size);
      return { off, zeroed: false };
    }
    // A free block that ends at the top can be extended.
    const last = this.free[this.free.length - 1];
    const start = last && last.off + last.size === this.top ? last.off : this.top;
    const end = start + size;
    if (end > MAX_PAGES * PAGE) return null;
    const have = this.init.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.init.memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        return null;
      }
    }
    if (start !== this.top) this.free.pop();
    const zeroed = start === this.top;
    this.top = end;
    this.live.set(start, size);
    return { off: start, zeroed };
  }

  /** Give a block back (unknown offsets are ignored, so a double release is harmless). */
  release(off: number): void {
    const size = this.live.get(off);
    if (size === undefined) return;
    this.live.delete(off);
    let lo = 0, hi = this.free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.free[mid].off < off) lo = mid + 1;
      else hi = mid;
    }
    this.free.splice(lo, 0, { off, size });
    // Coalesce with the next, then the previous block.
    const f = this.free[lo], n = this.free[lo + 1];
    if (n && f.off + f.size === n.off) {
      f.size += n.size;
      this.free.splice(lo + 1, 1);
    }
    const p = this.free[lo - 1];
    if (p && p.off + p.size === f.off) {
      p.size += f.size;
      this.free.splice(lo, 1);
    }
  }

  /** Release `off` when `owner` is garbage-collected (unless released before). */
  track(owner: object, off: number): void {
    this.registry.register(owner, off, owner);
  }

  untrack(owner: object): void {
    this.registry.unregister(owner);
  }
}
