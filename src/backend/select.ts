/**
 * Backend selection for the CLI and the trainer.
 *
 * - "cpu": the TypeScript reference backend (single-threaded; the oracle every backend is
 *   tested against).
 * - "cpu-mt": the multi-threaded CPU backend (src/backend/mt.ts): the encoder GEMM on OpenBLAS
 *   when it loads, else on onnxruntime's MLAS (shipped in the onnxruntime-node npm package the
 *   project already installs), else WebAssembly SIMD; the rest of the step on every core.
 * - "webgpu": Deno's built-in WebGPU (`navigator.gpu`, wgpu). Throws MonobenchError when no
 *   adapter/device is available.
 * - "dawn": Dawn through `npm:webgpu`: Vulkan on a hardware GPU, else Mesa OpenGL (EGL
 *   surfaceless, compatibility adapter). Its GPU objects are kept alive for the life of the
 *   process, which is what made it crash in long runs (docs/dawn.md). Throws MonobenchError when
 *   Dawn cannot be loaded or gives no adapter.
 * - "blas": the CPU reference with the dense encoder (and dense-enough sparse blocks) on OpenBLAS
 *   through FFI (src/backend/blas.ts), the rest single-threaded. Throws MonobenchError when
 *   OpenBLAS cannot be loaded.
 * - "auto": built-in WebGPU on a hardware adapter; else, when the machine has a GPU device node,
 *   Dawn on a hardware adapter (one notice line); else "cpu-mt", with one notice line naming the
 *   CPU path. Never a software adapter (Mesa llvmpipe / lavapipe, SwiftShader, WARP, a fallback
 *   adapter: the same CPU cores running WGSL, far slower than the CPU backends). Never throws for
 *   a missing GPU.
 */
import type { Backend } from "./types.ts";
import { CpuBackend } from "./cpu.ts";
import { MonobenchError } from "../util/errors.ts";
import { BlasBackend } from "./blas.ts";
import { CpuMtBackend } from "./mt.ts";
import { createWebGpuBackend, type WebGpuOptions } from "./webgpu/backend.ts";
import { hasGpuDeviceNode, probeAdapter } from "./webgpu/device.ts";

export type BackendName = "auto" | "webgpu" | "cpu-mt" | "blas" | "dawn" | "cpu";

export const BACKEND_NAMES: readonly BackendName[] = ["auto", "webgpu", "cpu-mt", "blas", "dawn", "cpu"];

export interface SelectOptions extends WebGpuOptions {
  /** Where the "auto" fallback notice goes (default: console.error). */
  notice?: (line: string) => void;
  /** "auto"/"cpu-mt" may use OpenBLAS (default true); false = MLAS or TypeScript GEMMs only. */
  allowBlas?: boolean;
  /** Threads of the cpu-mt backend (default MONOBENCH_THREADS, else the logical CPU count). */
  threads?: number;
  /** Whether "auto" tries Dawn after built-in WebGPU (default: when a GPU device node exists). */
  probeDawn?: boolean;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}

export { isSoftwareAdapter } from "./webgpu/device.ts";

async function cpuMt(opts: SelectOptions): Promise<CpuMtBackend> {
  return await CpuMtBackend.create({
    threads: opts.threads,
    gemm: opts.allowBlas === false ? "mlas-or-ts" : "auto",
  });
}

export async function selectBackend(name: BackendName, opts: SelectOptions = {}): Promise<Backend> {
  const mb = opts.maxBindingBytes;
  if (mb !== undefined && !(Number.isInteger(mb) && mb >= 4096)) {
    throw new MonobenchError(`maxBindingBytes must be an integer >= 4096 (got ${mb})`);
  }
  switch (name) {
    case "cpu":
      return new CpuBackend();
    case "cpu-mt":
      return await cpuMt(opts);
    case "webgpu":
    case "dawn":
      try {
        return await createWebGpuBackend(name, opts);
      } catch (e) {
        if (e instanceof MonobenchError) throw e;
        throw new MonobenchError(
          `the ${name} backend failed to start: ${e instanceof Error ? e.message : String(e)}`,
          "use --backend auto or --backend cpu",
        );
      }
    case "blas": {
      const b = BlasBackend.tryCreate();
      if (!b) {
        throw new MonobenchError(
          "the blas backend needs OpenBLAS (libopenblas.so.0) and FFI permission",
          "install libopenblas0-pthread (Debian) or set MONOBENCH_BLAS to the library path; run with -A",
        );
      }
      return b;
    }
    case "auto": {
      const notice = opts.notice ?? ((l: string) => console.error(l));
      let gpu, why: string;
      try {
        gpu = await createWebGpuBackend("webgpu", opts);
        if (!gpu.software) return gpu;
        why = `WebGPU has only a software adapter here (${gpu.description})`;
        gpu.destroy();
      } catch (e) {
        why = `WebGPU unavailable (${firstLine(e)})`;
      }
      // Deno's wgpu may miss a GPU that Dawn (Vulkan) reaches; only worth loading Dawn where a
      // GPU device node exists (an injected GPU object stands for one in tests).
      if (opts.probeDawn ?? (opts.gpu !== undefined || hasGpuDeviceNode())) {
        try {
          const p = await probeAdapter("dawn", opts);
          if (!p.software) {
            const d = await createWebGpuBackend("dawn", opts);
            if (!d.software) {
              notice(`note: ${why}; using the dawn backend: ${d.description}`);
              return d;
            }
            d.destroy();
          }
        } catch { /* Dawn missing or without an adapter: the CPU */ }
      }
      const b = await cpuMt(opts);
      notice(`note: no GPU: ${why}; using the cpu-mt backend: ${b.description}`);
      return b;
    }
    default:
      throw new MonobenchError(
        `unknown backend "${name}"`,
        `choose one of: ${BACKEND_NAMES.join(", ")}`,
      );
  }
}
