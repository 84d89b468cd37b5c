/**
 * Dense float32 GEMM on onnxruntime's MLAS kernels through the ONNX Runtime C API and Deno FFI.
 * The library ships inside the `onnxruntime-node` npm package (already a dependency for data
 * preparation), so this needs no system library. The napi binding of that package cannot be used
 * here: it rejects SharedArrayBuffer-backed arrays, and the multi-threaded backend keeps its
 * tensors in shared memory. Inputs and outputs are wrapped in place (no copies).
 *
 * Function-table indices are those of `struct OrtApi` in onnxruntime_c_api.h (append-only, so
 * stable across releases); the constructor checks them with a round trip before any real call.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { GraphBuilder } from "../data/onnx_build.ts";
import type { GemmProvider } from "./blas.ts";

const ORT_API_VERSION = 13;

/** Slots of `struct OrtApi` used here. */
const IDX = {
  CreateStatus: 0,
  GetErrorCode: 1,
  GetErrorMessage: 2,
  CreateEnv: 3,
  CreateSessionFromArray: 8,
  Run: 9,
  CreateSessionOptions: 10,
  SetSessionExecutionMode: 13,
  SetSessionGraphOptimizationLevel: 23,
  SetIntraOpNumThreads: 24,
  SetInterOpNumThreads: 25,
  CreateTensorWithDataAsOrtValue: 49,
  CreateCpuMemoryInfo: 69,
  MemoryInfoGetName: 71,
  ReleaseStatus: 93,
  ReleaseMemoryInfo: 94,
  ReleaseSession: 95,
  ReleaseValue: 96,
  ReleaseSessionOptions: 100,
  AddSessionConfigEntry: 130,
} as const;

const P = "pointer" as const, B = "buffer" as const;
const SIGS = {
  CreateStatus: { parameters: ["i32", B], result: P },
  GetErrorCode: { parameters: [P], result: "i32" },
  GetErrorMessage: { parameters: [P], result: P },
  CreateEnv: { parameters: ["i32", B, B], result: P },
  CreateSessionFromArray: { parameters: [P, B, "usize", P, B], result: P },
  Run: { parameters: [P, P, B, B, "usize", B, "usize", B], result: P },
  CreateSessionOptions: { parameters: [B], result: P },
  SetSessionExecutionMode: { parameters: [P, "i32"], result: P },
  SetSessionGraphOptimizationLevel: { parameters: [P, "i32"], result: P },
  SetIntraOpNumThreads: { parameters: [P, "i32"], result: P },
  SetInterOpNumThreads: { parameters: [P, "i32"], result: P },
  CreateTensorWithDataAsOrtValue: { parameters: [P, P, "usize", B, "usize", "i32", B], result: P },
  CreateCpuMemoryInfo: { parameters: ["i32", "i32", B], result: P },
  MemoryInfoGetName: { parameters: [P, B], result: P },
  ReleaseStatus: { parameters: [P], result: "void" },
  ReleaseMemoryInfo: { parameters: [P], result: "void" },
  ReleaseSession: { parameters: [P], result: "void" },
  ReleaseValue: { parameters: [P], result: "void" },
  ReleaseSessionOptions: { parameters: [P], result: "void" },
  AddSessionConfigEntry: { parameters: [P, B, B], result: P },
} as const satisfies Record<keyof typeof IDX, Deno.ForeignFunction>;

type Fns = { [K in keyof typeof SIGS]: Deno.UnsafeFnPointer<(typeof SIGS)[K]>["call"] };

const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + "\0");

/** Path of libonnxruntime inside the installed onnxruntime-node package, or null. */
function libraryPath(): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve("onnxruntime-node");
    const arch = Deno.build.arch === "aarch64" ? "arm64" : "x64";
    const os = Deno.build.os === "darwin" ? "darwin" : Deno.build.os === "windows" ? "win32" : "linux";
    const name = os === "darwin"
      ? "libonnxruntime.1.dylib"
      : os === "win32"
      ? "onnxruntime.dll"
      : "libonnxruntime.so.1";
    return join(dirname(pkg), "..", "bin", "napi-v6", os, arch, name);
  } catch {
    return null;
  }
}

/** One loaded model: a fixed list of input and output names. */
interface Session {
  ptr: Deno.PointerValue;
  inNames: BigUint64Array;
  outNames: BigUint64Array;
  keep: Uint8Array[];
}

/**
 * MLAS GEMMs through onnxruntime. `threads` is the intra-op thread count (the caller's thread
 * included); spinning is off so that idle pool threads do not steal the cores from the rest of
 * the training step.
 */
export class MlasGemm {
  readonly version: string;
  private readonly fns: Fns;
  private readonly env: Deno.PointerValue;
  private readonly mem: Deno.PointerValue;
  private readonly sessions = new Map<string, Session>();

  private constructor(
    private readonly lib: Deno.DynamicLibrary<{ OrtGetApiBase: { parameters: []; result: "pointer" } }>,
    readonly threads: number,
  ) {
    const base = lib.symbols.OrtGetApiBase();
    if (!base) throw new Error("OrtGetApiBase returned null");
    const bv = new Deno.UnsafePointerView(base);
    const getApi = new Deno.UnsafeFnPointer(bv.getPointer(0)!, { parameters: ["u32"], result: "pointer" });
    const getVersion = new Deno.UnsafeFnPointer(bv.getPointer(8)!, { parameters: [], result: "pointer" });
    this.version = Deno.UnsafePointerView.getCString(getVersion.call()!);
    const api = getApi.call(ORT_API_VERSION);
    if (!api) throw new Error(`onnxruntime ${this.version} does not offer C API version ${ORT_API_VERSION}`);
    const av = new Deno.UnsafePointerView(api);
    const fns: Record<string, unknown> = {};
    for (const [name, i] of Object.entries(IDX)) {
      const f = new Deno.UnsafeFnPointer(av.getPointer(i * 8)!, SIGS[name as keyof typeof SIGS]);
      fns[name] = f.call.bind(f);
    }
    this.fns = fns as Fns;
    // Check the table layout: a status round trip, then the CPU memory info's name.
    const st = this.fns.CreateStatus(2, cstr("probe"));
    const ok = st && this.fns.GetErrorCode(st) === 2 &&
      Deno.UnsafePointerView.getCString(this.fns.GetErrorMessage(st)!) === "probe";
    if (st) this.fns.ReleaseStatus(st);
    if (!ok) throw new Error("unexpected onnxruntime C API layout");
    const out = new BigUint64Array(1);
    this.check(this.fns.CreateEnv(3, cstr("monobench"), out));
    this.env = Deno.UnsafePointer.create(out[0]);
    this.check(this.fns.CreateCpuMemoryInfo(0, 0, out));
    this.mem = Deno.UnsafePointer.create(out[0]);
    this.check(this.fns.MemoryInfoGetName(this.mem, out));
    const memName = Deno.UnsafePointerView.getCString(Deno.UnsafePointer.create(out[0])!);
    if (memName !== "Cpu") throw new Error(`unexpected onnxruntime memory info "${memName}"`);
  }

  /** Load onnxruntime's library; null when unavailable (no FFI permission, package missing). */
  static tryCreate(threads: number): MlasGemm | null {
    const path = libraryPath();
    if (!path) return null;
    try {
      const lib = Deno.dlopen(path, { OrtGetApiBase: { parameters: [], result: "pointer" } });
      return new MlasGemm(lib, threads);
    } catch {
      return null;
    }
  }

  private check(status: Deno.PointerValue): void {
    if (!status) return;
    const msg = Deno.UnsafePointerView.getCString(this.fns.GetErrorMessage(status)!);
    this.fns.ReleaseStatus(status);
    throw new Error(`onnxruntime: ${msg}`);
  }

  private session(
    key: string,
    build: () => { model: Uint8Array; inputs: string[]; outputs: string[] },
  ): Session {
    let s = this.sessions.get(key);
    if (s) return s;
    const { model, inputs, outputs } = build();
    const out = new BigUint64Array(1);
    this.check(this.fns.CreateSessionOptions(out));
    const so = Deno.UnsafePointer.create(out[0]);
    try {
      this.check(this.fns.SetIntraOpNumThreads(so, this.threads));
      this.check(this.fns.SetInterOpNumThreads(so, 1));
      this.check(this.fns.SetSessionExecutionMode(so, 0));
      this.check(this.fns.SetSessionGraphOptimizationLevel(so, 99));
      this.check(this.fns.AddSessionConfigEntry(so, cstr("session.intra_op.allow_spinning"), cstr("0")));
      this.check(this.fns.CreateSessionFromArray(this.env, model, BigInt(model.length), so, out));
    } finally {
      this.fns.ReleaseSessionOptions(so);
    }
    const keep = [...inputs, ...outputs].map(cstr);
    const ptrs = (xs: Uint8Array[]) =>
      BigUint64Array.from(xs, (x) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(x))));
    s = {
      ptr: Deno.UnsafePointer.create(out[0]),
      inNames: ptrs(keep.slice(0, inputs.length)),
      outNames: ptrs(keep.slice(inputs.length)),
      keep,
    };
    this.sessions.set(key, s);
    return s;
  }

  private run(s: Session, inputs: [Float32Array, number[]][], outputs: [Float32Array, number[]][]): void {
    const values: Deno.PointerValue[] = [];
    const out = new BigUint64Array(1);
    const wrap = ([a, dims]: [Float32Array, number[]]) => {
      const shape = BigInt64Array.from(dims, (d) => BigInt(d));
      // An empty view may have no address; ORT needs one even for zero elements.
      const ptr = Deno.UnsafePointer.of(a.length ? a : new Float32Array(1));
      this.check(
        this.fns.CreateTensorWithDataAsOrtValue(
          this.mem,
          ptr,
          BigInt(a.byteLength),
          shape,
          BigInt(dims.length),
          1,
          out,
        ),
      );
      values.push(Deno.UnsafePointer.create(out[0]));
      return out[0];
    };
    try {
      const ins = BigUint64Array.from(inputs.map(wrap));
      const outs = BigUint64Array.from(outputs.map(wrap));
      this.check(
        this.fns.Run(s.ptr, null, s.inNames, ins, BigInt(ins.length), s.outNames, BigInt(outs.length), outs),
      );
    } finally {
      for (const v of values) this.fns.ReleaseValue(v);
    }
  }

  /** pre[B, ω] = ReLU((x[B, d] − bdec) · Wencᵀ + benc): one fused onnxruntime graph. */
  encode(x: Float32Array, W: Float32Array, benc: Float32Array, bdec: Float32Array, pre: Float32Array): void {
    const d = bdec.length, w = benc.length, rows = x.length / d;
    const s = this.session("encode", () => {
      const g = new GraphBuilder();
      g.input("x", ["B", "d"]);
      g.input("W", ["w", "d"]);
      g.input("benc", ["w"]);
      g.input("bdec", ["d"]);
      g.node("Sub", ["x", "bdec"], ["xc"]);
      g.node("Gemm", ["xc", "W", "benc"], ["lin"], { transB: { i: 1 } });
      g.node("Relu", ["lin"], ["pre"]);
      g.output("pre", ["B", "w"]);
      return { model: g.build(), inputs: ["x", "W", "benc", "bdec"], outputs: ["pre"] };
    });
    this.run(s, [[x, [rows, d]], [W, [w, d]], [benc, [w]], [bdec, [d]]], [[pre, [rows, w]]]);
  }

  /** C[M, N] = op(A) · op(B) with contiguous operands (A: [M, K] or [K, M]; B: [K, N] or [N, K]). */
  gemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    Bm: Float32Array,
    C: Float32Array,
  ): void {
    const key = `gemm${+transA}${+transB}`;
    const s = this.session(key, () => {
      const g = new GraphBuilder();
      g.input("A", transA ? ["K", "M"] : ["M", "K"]);
      g.input("B", transB ? ["N", "K"] : ["K", "N"]);
      g.node("Gemm", ["A", "B"], ["C"], { transA: { i: +transA }, transB: { i: +transB } });
      g.output("C", ["M", "N"]);
      return { model: g.build(), inputs: ["A", "B"], outputs: ["C"] };
    });
    this.run(
      s,
      [[A, transA ? [K, M] : [M, K]], [Bm, transB ? [N, K] : [K, N]]],
      [[C, [M, N]]],
    );
  }

  /** Release every session (the library stays loaded: onnxruntime-node may share it). */
  close(): void {
    for (const s of this.sessions.values()) this.fns.ReleaseSession(s.ptr);
    this.sessions.clear();
  }
}

/** Contiguous copy of a [rows, cols] block stored with leading dimension ld (or A itself). */
function packed(A: Float32Array, rows: number, cols: number, ld: number): Float32Array {
  if (ld === cols) return A.subarray(0, rows * cols);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(A.subarray(r * ld, r * ld + cols), r * cols);
  return out;
}

/** MLAS as a {@link GemmProvider} (cblas semantics: strided operands are packed first). */
export function mlasProvider(m: MlasGemm): GemmProvider {
  return {
    kind: "mlas",
    description: `MLAS (onnxruntime ${m.version}, ${m.threads} thread${m.threads === 1 ? "" : "s"})`,
    sgemm(transA, transB, M, N, K, A, lda, Bm, ldb, beta, C, ldc, alpha = 1) {
      if (M === 0 || N === 0) return;
      const a = transA ? packed(A, K, M, lda) : packed(A, M, K, lda);
      const b = transB ? packed(Bm, N, K, ldb) : packed(Bm, K, N, ldb);
      if (beta === 0 && ldc === N && alpha === 1) {
        if (K === 0) C.fill(0, 0, M * N);
        else m.gemm(transA, transB, M, N, K, a, b, C.subarray(0, M * N));
        return;
      }
      const T = new Float32Array(M * N);
      if (K > 0) m.gemm(transA, transB, M, N, K, a, b, T);
      for (let r = 0; r < M; r++) {
        const o = r * ldc, t = r * N;
        if (beta === 0 && alpha === 1) C.set(T.subarray(t, t + N), o);
        else if (beta === 0) { for (let c = 0; c < N; c++) C[o + c] = alpha * T[t + c]; }
        else for (let c = 0; c < N; c++) C[o + c] = beta * C[o + c] + alpha * T[t + c];
      }
    },
    encode(x, W, benc, bdec, pre) {
      if (x.length === 0 || benc.length === 0) return true;
      m.encode(x, W, benc, bdec, pre);
      return true;
    },
  };
}
