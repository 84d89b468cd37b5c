/**
 * Low-level WebGPU plumbing shared by the WebGPU backend: command batching, typed per-dispatch
 * uniform parameters, pipeline cache, scratch buffers, read-back. Binding ranges and splits
 * live in split.ts.
 *
 * Ordering model
 * - Every op encodes compute dispatches (or copies) into one open command encoder; nothing is
 *   submitted until `flush()` (called when a batch is full, and by `read`, `sync`, and host writes
 *   into a buffer the open batch uses). WebGPU executes submissions, and dispatches inside one
 *   submission, in order, with storage writes of one dispatch visible to the next.
 * - Host numbers of each dispatch (sizes, offsets, lr…), packed by the kernel's typed parameter
 *   struct ({@link ParamStruct}), go into a 256-byte slice of a uniform
 *   "ring" buffer: slices are filled on the host while the batch is encoded and uploaded with one
 *   `queue.writeBuffer` right before the batch is submitted. Because `writeBuffer` is ordered after
 *   every earlier submission, the previous batch still sees its own parameters: values are
 *   captured at call time.
 * - Host writes (`writeTo`) into a buffer that the open batch references flush the batch first, so
 *   that the write lands after the ops enqueued before it.
 */

import { MonobenchError } from "../../util/errors.ts";

import { type Range, Split } from "./split.ts";

export type { Range };

export interface Kernel {
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly nStorage: number;
}

/** Words of the per-dispatch uniform slice (256 bytes). */
export const PARAM_WORDS = 64;

/** Field types of a parameter struct: bool is a u32 0/1 in WGSL. */
export type FieldType = "u32" | "f32" | "bool";
type FieldValues<F extends Record<string, FieldType>> = {
  [K in keyof F]: F[K] extends "bool" ? boolean : number;
};

/** Packed uniform words of one dispatch; word 0 (`groups`) is filled in by {@link Engine.dispatch}. */
export class Params {
  readonly words = new Uint32Array(PARAM_WORDS);
}

/**
 * The one definition of a kernel's parameters: `wgsl()` declares the struct and its uniform
 * binding `U` for the shader, `pack()` lays out the values for the host, field by field in the
 * same order. Field 0 is always `groups`, the dispatch's workgroup count.
 */
export class ParamStruct<F extends Record<string, FieldType>> {
  readonly names: readonly string[];
  constructor(readonly name: string, readonly fields: F) {
    this.names = Object.keys(fields);
    if (this.names.length + 1 > PARAM_WORDS) throw new Error(`webgpu: ${name} has too many fields`);
    if (this.names.includes("groups")) throw new Error(`webgpu: ${name}: "groups" is reserved`);
  }
  wgsl(): string {
    const fs = this.names.map((n) => `  ${n}: ${this.fields[n] === "f32" ? "f32" : "u32"},`).join("\n");
    return `struct ${this.name} {\n  groups: u32,\n${fs}\n}\n@group(0) @binding(0) var<uniform> U: ${this.name};\n`;
  }
  pack(values: FieldValues<F>): Params {
    const p = new Params();
    const fl = new Float32Array(p.words.buffer);
    const vs = values as Record<string, number | boolean>;
    this.names.forEach((n, i) => {
      const v = vs[n], t = this.fields[n];
      if (t === "bool") {
        if (typeof v !== "boolean") throw new Error(`webgpu: ${this.name}.${n} must be a boolean`);
        p.words[i + 1] = v ? 1 : 0;
      } else if (typeof v !== "number") throw new Error(`webgpu: ${this.name}.${n} is missing`);
      else if (t === "f32") fl[i + 1] = v;
      else {
        if (!(v >= 0 && v <= 0xffffffff)) {
          throw new Error(`webgpu: bad u32 parameter ${this.name}.${n} = ${v}`);
        }
        p.words[i + 1] = v >>> 0;
      }
    });
    return p;
  }
}

/** Define a kernel's parameter struct (see {@link ParamStruct}). */
export function struct<F extends Record<string, FieldType>>(name: string, fields: F): ParamStruct<F> {
  return new ParamStruct(name, fields);
}

export interface EngineOptions {
  /** Largest byte size of one storage binding (default: the device limit). Tests lower it to
   * exercise the split paths on small data. */
  maxBindingBytes?: number;
  /** Dispatches per submitted command buffer (default 512). */
  batchDispatches?: number;
}

const BUF_USAGE = 0x0080 /* STORAGE */ | 0x0004 /* COPY_SRC */ | 0x0008; /* COPY_DST */
const MAP_READ = 0x0001, COPY_DST = 0x0008, UNIFORM = 0x0040;
const SHADER_STAGE_COMPUTE = 0x4;
const RING_SLOTS = 2048;
const DUMMY_SLOTS = 16;
/** Largest host<->device transfer in one piece. */
const XFER_CHUNK = 64 << 20;

export class Engine {
  /** Storage-binding offset alignment (bytes). */
  readonly align: number;
  /** Largest storage binding (bytes). */
  readonly maxBind: number;
  readonly maxBufferSize: number;
  readonly maxStorageBuffers: number;
  private readonly uStride: number;
  private readonly ring: GPUBuffer;
  private readonly ringHost: Uint32Array<ArrayBuffer>;
  private ringUsed = 0; // slots
  private enc: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly used = new Set<GPUBuffer>();
  private toDestroy: GPUBuffer[] = [];
  private readonly kernels = new Map<string, Kernel>();
  private readonly scratches = new Map<string, GPUBuffer>();
  private readonly batch: number;
  private firstError: string | null = null;
  private destroyed = false;
  /** Small storage buffer bound where an optional argument is absent (one slot per binding, so
   * that bindings never alias: Dawn rejects overlapping writable bindings). */
  readonly dummy: GPUBuffer;
  private readonly dummySlot: number;
  /** Binding ranges and chunk sizes under this device's limits (split.ts). */
  readonly split: Split;
  /** Counters, for benchmarks and tests. */
  readonly stats = { dispatches: 0, submits: 0, syncs: 0 };

  constructor(readonly device: GPUDevice, opts: EngineOptions = {}) {
    const lim = device.limits;
    this.align = Math.max(16, lim.minStorageBufferOffsetAlignment);
    const devMax = lim.maxStorageBufferBindingSize;
    const want = opts.maxBindingBytes ?? devMax;
    if (!(want >= 4096)) throw new Error(`webgpu: maxBindingBytes must be >= 4096 (got ${want})`);
    this.maxBind = Math.floor(Math.min(devMax, want) / 16) * 16;
    this.maxBufferSize = lim.maxBufferSize;
    this.maxStorageBuffers = lim.maxStorageBuffersPerShaderStage;
    this.uStride = Math.max(256, lim.minUniformBufferOffsetAlignment);
    this.batch = opts.batchDispatches ?? 512;
    this.ring = device.createBuffer({ size: this.uStride * RING_SLOTS, usage: UNIFORM | COPY_DST });
    this.ringHost = new Uint32Array(new ArrayBuffer(this.uStride * RING_SLOTS));
    this.dummySlot = Math.max(256, this.align);
    this.dummy = device.createBuffer({ size: this.dummySlot * DUMMY_SLOTS, usage: BUF_USAGE });
    this.split = new Split(this.align, this.maxBind, this.dummy, this.dummySlot);
    const dev = device as unknown as EventTarget;
    if (typeof dev.addEventListener === "function") {
      dev.addEventListener("uncapturederror", (ev) => {
        const e = (ev as unknown as { error?: { message?: string } }).error;
        this.firstError ??= e?.message ?? String(ev);
      });
    }
    device.lost.then((info) => {
      if (!this.destroyed) this.firstError ??= `device lost: ${info.message}`;
    }).catch(() => {});
  }

  /** Throw the first asynchronous device error seen so far, if any. */
  checkError(): void {
    if (this.firstError !== null) throw new Error(`webgpu: ${this.firstError}`);
    if (this.destroyed) throw new Error("webgpu: the backend was destroyed");
  }

  // ---- buffers --------------------------------------------------------------------------------
  createBuffer(bytes: number, label?: string): GPUBuffer {
    this.checkError();
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.maxBufferSize) {
      throw new MonobenchError(
        `webgpu: a tensor of ${bytes} bytes exceeds the device's maxBufferSize (${this.maxBufferSize})`,
        "reduce the batch size or the SAE width, or use --backend cpu",
      );
    }
    return this.device.createBuffer({ size, usage: BUF_USAGE, label });
  }

  /** Destroy a buffer once no unsubmitted work references it. */
  destroyLater(buf: GPUBuffer): void {
    if (this.enc && this.used.has(buf)) this.toDestroy.push(buf);
    else buf.destroy();
  }

  /** A scratch buffer of at least `bytes` bytes, reused between ops (ops run in order). */
  scratch(name: string, bytes: number): GPUBuffer {
    const cur = this.scratches.get(name);
    if (cur && cur.size >= bytes) return cur;
    if (cur) this.destroyLater(cur);
    const b = this.createBuffer(Math.max(bytes, cur ? Math.min(cur.size * 2, this.maxBind) : 0), name);
    this.scratches.set(name, b);
    return b;
  }

  // ---- pipelines ------------------------------------------------------------------------------
  kernel(name: string, build: () => { code: string; nStorage: number }): Kernel {
    const hit = this.kernels.get(name);
    if (hit) return hit;
    const { code, nStorage } = build();
    if (nStorage > this.maxStorageBuffers) {
      throw new Error(
        `webgpu: kernel ${name} needs ${nStorage} storage buffers (device: ${this.maxStorageBuffers})`,
      );
    }
    const entries: GPUBindGroupLayoutEntry[] = [
      { binding: 0, visibility: SHADER_STAGE_COMPUTE, buffer: { type: "uniform" } },
    ];
    for (let i = 1; i <= nStorage; i++) {
      entries.push({ binding: i, visibility: SHADER_STAGE_COMPUTE, buffer: { type: "storage" } });
    }
    const layout = this.device.createBindGroupLayout({ entries, label: name });
    const module = this.device.createShaderModule({ code, label: name });
    const pipeline = this.device.createComputePipeline({
      label: name,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    const k: Kernel = { name, pipeline, layout, nStorage };
    this.kernels.set(name, k);
    return k;
  }

  // ---- encoding -------------------------------------------------------------------------------
  private encoder(): GPUCommandEncoder {
    if (this.destroyed) throw new Error("webgpu: the backend was destroyed");
    if (!this.enc) this.enc = this.device.createCommandEncoder();
    return this.enc;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /**
   * Encode one dispatch. `groups` = number of workgroups (laid out in 2-D when above the
   * per-dimension limit; kernels get the count as `U.groups`) or explicit [x, y] counts.
   */
  dispatch(k: Kernel, binds: Range[], p: Params, groups: number | [number, number]): void {
    let gx: number, gy: number, total: number;
    if (typeof groups === "number") {
      total = groups;
      gx = Math.min(groups, 65535);
      gy = gx > 0 ? Math.ceil(groups / gx) : 0;
    } else {
      [gx, gy] = groups;
      total = gx * gy;
    }
    if (total <= 0) return;
    if (gx > 65535 || gy > 65535) throw new Error(`webgpu: dispatch too large (${gx} x ${gy}) in ${k.name}`);
    if (binds.length !== k.nStorage) throw new Error(`webgpu: ${k.name} needs ${k.nStorage} bindings`);
    if (this.ringUsed >= RING_SLOTS) this.flush();
    const enc = this.encoder();
    p.words[0] = total;
    const slot = this.ringUsed++;
    this.ringHost.set(p.words, (slot * this.uStride) / 4);
    const entries: GPUBindGroupEntry[] = [
      { binding: 0, resource: { buffer: this.ring, offset: slot * this.uStride, size: 256 } },
    ];
    let nDummy = 0;
    for (let i = 0; i < binds.length; i++) {
      let b = binds[i];
      if (b.buffer === this.dummy) b = { ...b, offset: this.dummySlot * nDummy++ };
      entries.push({ binding: i + 1, resource: { buffer: b.buffer, offset: b.offset, size: b.size } });
      this.used.add(b.buffer);
    }
    const bg = this.device.createBindGroup({ layout: k.layout, entries });
    if (!this.pass) this.pass = enc.beginComputePass();
    this.pass.setPipeline(k.pipeline);
    this.pass.setBindGroup(0, bg);
    this.pass.dispatchWorkgroups(gx, gy);
    this.stats.dispatches++;
    if (this.ringUsed >= this.batch) this.flush();
  }

  /** Encode a buffer-to-buffer copy (byte offsets and size multiples of 4). */
  copy(src: GPUBuffer, srcOff: number, dst: GPUBuffer, dstOff: number, size: number): void {
    if (size <= 0) return;
    const enc = this.encoder();
    this.endPass();
    enc.copyBufferToBuffer(src, srcOff, dst, dstOff, size);
    this.used.add(src);
    this.used.add(dst);
  }

  /** Encode a zero fill of a byte range (offset and size multiples of 4). */
  clear(buf: GPUBuffer, off: number, size: number): void {
    if (size <= 0) return;
    const enc = this.encoder();
    this.endPass();
    enc.clearBuffer(buf, off, size);
    this.used.add(buf);
  }

  /** Submit the open batch (no wait). */
  flush(): void {
    if (!this.enc) return;
    this.endPass();
    if (this.ringUsed > 0) {
      this.device.queue.writeBuffer(this.ring, 0, this.ringHost, 0, (this.ringUsed * this.uStride) / 4);
    }
    this.device.queue.submit([this.enc.finish()]);
    this.stats.submits++;
    this.enc = null;
    this.ringUsed = 0;
    this.used.clear();
    for (const b of this.toDestroy) b.destroy();
    this.toDestroy = [];
  }

  /** Write host bytes into a buffer, ordered after all previously enqueued work. */
  writeTo(buf: GPUBuffer, byteOffset: number, data: Uint8Array): void {
    this.checkError();
    if (this.used.has(buf)) this.flush();
    for (let o = 0; o < data.byteLength; o += XFER_CHUNK) {
      const n = Math.min(XFER_CHUNK, data.byteLength - o);
      const view = new Uint8Array(data.buffer, data.byteOffset + o, n) as Uint8Array<ArrayBuffer>;
      this.device.queue.writeBuffer(buf, byteOffset + o, view);
    }
  }

  /** Read `bytes` bytes of `buf` from `byteOffset` (waits for all enqueued work). */
  async readFrom(buf: GPUBuffer, byteOffset: number, bytes: number): Promise<ArrayBuffer> {
    this.checkError();
    const out = new Uint8Array(bytes);
    const stagings: { st: GPUBuffer; at: number; n: number }[] = [];
    for (let o = 0; o < bytes; o += XFER_CHUNK * 4) {
      const n = Math.min(XFER_CHUNK * 4, bytes - o);
      const st = this.device.createBuffer({ size: Math.ceil(n / 4) * 4, usage: MAP_READ | COPY_DST });
      const enc = this.encoder();
      this.endPass();
      enc.copyBufferToBuffer(buf, byteOffset + o, st, 0, Math.ceil(n / 4) * 4);
      stagings.push({ st, at: o, n });
    }
    this.flush();
    this.stats.syncs++;
    try {
      for (const { st, at, n } of stagings) {
        await st.mapAsync(1 /* GPUMapMode.READ */);
        out.set(new Uint8Array(st.getMappedRange(), 0, n), at);
        st.unmap();
      }
    } finally {
      for (const { st } of stagings) st.destroy();
    }
    this.checkError();
    return out.buffer;
  }

  /** Wait for all enqueued work. */
  async sync(): Promise<void> {
    this.checkError();
    this.flush();
    this.stats.syncs++;
    await this.device.queue.onSubmittedWorkDone();
    this.checkError();
  }

  destroy(): void {
    if (this.destroyed) return;
    try {
      this.flush();
    } catch { /* ignore */ }
    this.destroyed = true;
    this.device.destroy();
  }
}
