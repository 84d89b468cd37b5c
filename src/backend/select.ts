/**
 * Backend selection for the CLI and the trainer.
 *
 * - "cpu": the TypeScript reference backend.
 * - "webgpu": Deno's built-in WebGPU (`navigator.gpu`, wgpu; Vulkan lavapipe / llvmpipe on a
 *   machine without a GPU). Throws MonobenchError when no adapter/device is available.
 * - "dawn": Dawn through `npm:webgpu` on Mesa OpenGL (EGL surfaceless, compatibility adapter).
 *   Opt-in only: Dawn is known to crash (SIGSEGV/SIGABRT) or hang inside Deno after a few
 *   thousand queue submissions, so long training runs should use "webgpu". Throws
 *   MonobenchError when Dawn cannot be loaded or gives no adapter.
 * - "blas": the CPU backend with the dense encoder (and dense-enough sparse blocks) on OpenBLAS
 *   through FFI (src/backend/blas.ts). Throws MonobenchError when OpenBLAS cannot be loaded.
 * - "auto": built-in WebGPU on a hardware adapter. On a software adapter (Mesa llvmpipe /
 *   lavapipe, SwiftShader — the same CPU cores running WGSL at ~20 GFLOP/s) the OpenBLAS
 *   backend is several times faster, so auto takes it when available, with a one-line notice.
 *   Without WebGPU: OpenBLAS if available, else the CPU reference, with a one-line notice.
 *   Never throws for a missing GPU.
 */
import type { Backend } from "./types.ts";
import { CpuBackend } from "./cpu.ts";
import { MonobenchError } from "../util/errors.ts";
import { BlasBackend } from "./blas.ts";
import { createWebGpuBackend, type WebGpuOptions } from "./webgpu/backend.ts";

export type BackendName = "auto" | "webgpu" | "blas" | "dawn" | "cpu";

export const BACKEND_NAMES: readonly BackendName[] = ["auto", "webgpu", "blas", "dawn", "cpu"];

export interface SelectOptions extends WebGpuOptions {
  /** Where the "auto" fallback notice goes (default: console.error). */
  notice?: (line: string) => void;
  /** "auto" may use the OpenBLAS backend (default true); false = WebGPU or the plain CPU only. */
  allowBlas?: boolean;
}

export { isSoftwareAdapter } from "./webgpu/device.ts";

export async function selectBackend(name: BackendName, opts: SelectOptions = {}): Promise<Backend> {
  const mb = opts.maxBindingBytes;
  if (mb !== undefined && !(Number.isInteger(mb) && mb >= 4096)) {
    throw new MonobenchError(`maxBindingBytes must be an integer >= 4096 (got ${mb})`);
  }
  switch (name) {
    case "cpu":
      return new CpuBackend();
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
      const blas = () => (opts.allowBlas === false ? null : BlasBackend.tryCreate());
      let gpu;
      try {
        gpu = await createWebGpuBackend("webgpu", opts);
      } catch (e) {
        const why = (e instanceof Error ? e.message : String(e)).split("\n")[0];
        const b = blas();
        notice(`monobench: WebGPU unavailable (${why}); using the CPU backend${b ? " with OpenBLAS" : ""}`);
        return b ?? new CpuBackend();
      }
      if (gpu.software) {
        const b = blas();
        if (b) {
          gpu.destroy();
          notice(
            "monobench: WebGPU runs on a software adapter here; using the CPU backend with OpenBLAS, " +
              "which is faster (--backend webgpu forces WebGPU)",
          );
          return b;
        }
      }
      return gpu;
    }
    default:
      throw new MonobenchError(
        `unknown backend "${name}"`,
        `choose one of: ${BACKEND_NAMES.join(", ")}`,
      );
  }
}
