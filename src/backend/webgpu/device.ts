/**
 * Adapter/device acquisition for the two WebGPU implementations:
 * - "webgpu": Deno's built-in `navigator.gpu` (wgpu). On this kind of machine it runs on Mesa's
 *   lavapipe/llvmpipe (software Vulkan). No flags needed.
 * - "dawn": Dawn through `npm:webgpu` (opt-in). Uses the OpenGL(ES) backend on Mesa with
 *   `EGL_PLATFORM=surfaceless` and a compatibility-mode adapter. Dawn is known to crash or hang
 *   inside Deno after a few thousand queue submissions (SIGSEGV/SIGABRT), so it is for experiments
 *   only; the backend batches up to hundreds of dispatches per submission to delay that.
 *
 * The device is created with the adapter's maximum limits for everything the kernels care about
 * (binding sizes, buffer size, storage buffers per stage, workgroup sizes…).
 */
import { MonobenchError } from "../../util/errors.ts";

export type GpuKind = "webgpu" | "dawn";

export interface DeviceOptions {
  /** Use this GPU object instead of `navigator.gpu` / Dawn (tests inject a fake one). */
  gpu?: GPU;
  /** Dawn `create()` options (default `["backend=opengl"]`). */
  dawnOptions?: string[];
  powerPreference?: GPUPowerPreference;
}

export interface AcquiredDevice {
  kind: GpuKind;
  device: GPUDevice;
  adapter: GPUAdapter;
  description: string;
  /** A software adapter (Mesa llvmpipe / lavapipe, SwiftShader, WARP): the CPU running WGSL. */
  software: boolean;
}

/** Whether an adapter description names a software adapter (fallback flag or a known CPU driver). */
export function isSoftwareAdapter(description: string): boolean {
  return /fallback\/software adapter|llvmpipe|lavapipe|swiftshader|softpipe|warp/i.test(description);
}

/** Limits requested at the adapter's maximum (or minimum, for alignments). */
const LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxUniformBufferBindingSize",
  "maxBindingsPerBindGroup",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
] as const;

const HINT_WEBGPU = "On Linux without a GPU, install Mesa's software Vulkan driver (apt-get install " +
  "mesa-vulkan-drivers libvulkan1), or use --backend cpu (or auto).";
const HINT_DAWN = "Dawn (npm:webgpu) needs Mesa's EGL/OpenGL (libegl-mesa0, libgl1-mesa-dri) and " +
  "network access to fetch the npm package once; use --backend webgpu or cpu instead.";

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** One Dawn instance per option set: several `create()` instances in one process crash Dawn. */
const dawnInstances = new Map<string, GPU>();

async function getGpu(kind: GpuKind, opts: DeviceOptions): Promise<GPU> {
  if (opts.gpu) return opts.gpu;
  if (kind === "webgpu") {
    const gpu = (navigator as unknown as { gpu?: GPU }).gpu;
    if (!gpu) {
      throw new MonobenchError("WebGPU is not available in this Deno runtime (navigator.gpu)", HINT_WEBGPU);
    }
    return gpu;
  }
  try {
    if (!Deno.env.get("EGL_PLATFORM")) Deno.env.set("EGL_PLATFORM", "surfaceless");
  } catch { /* no env permission: Dawn may still work if the caller set it */ }
  let mod: { create: (o: string[]) => unknown };
  try {
    mod = await import("webgpu") as unknown as { create: (o: string[]) => unknown };
  } catch (e) {
    throw new MonobenchError(`cannot load Dawn (npm:webgpu): ${errMsg(e)}`, HINT_DAWN);
  }
  const key = JSON.stringify(opts.dawnOptions ?? ["backend=opengl"]);
  const cached = dawnInstances.get(key);
  if (cached) return cached;
  try {
    const gpu = mod.create(opts.dawnOptions ?? ["backend=opengl"]) as GPU;
    dawnInstances.set(key, gpu);
    return gpu;
  } catch (e) {
    throw new MonobenchError(`Dawn create() failed: ${errMsg(e)}`, HINT_DAWN);
  }
}

/** Describe an adapter in one line (Deno exposes adapter.info through getters). */
export function describeAdapter(kind: GpuKind, adapter: GPUAdapter): string {
  const info = (adapter as unknown as { info?: Record<string, unknown> }).info ?? {};
  const parts: string[] = [];
  for (const k of ["description", "device", "vendor", "architecture"]) {
    const v = info[k];
    if (v !== undefined && v !== null && String(v).trim() !== "" && !parts.includes(String(v))) {
      parts.push(String(v));
    }
  }
  const fallback = (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
    (info.isFallbackAdapter as boolean | undefined);
  const who = kind === "dawn" ? "Dawn (npm:webgpu)" : "WebGPU (Deno built-in)";
  return `${who}: ${parts.join(", ") || "unknown adapter"}${fallback ? " [fallback/software adapter]" : ""}`;
}

export async function acquireDevice(kind: GpuKind, opts: DeviceOptions = {}): Promise<AcquiredDevice> {
  const gpu = await getGpu(kind, opts);
  const hint = kind === "dawn" ? HINT_DAWN : HINT_WEBGPU;
  let adapter: GPUAdapter | null;
  try {
    const ro: Record<string, unknown> = { powerPreference: opts.powerPreference ?? "high-performance" };
    if (kind === "dawn") ro.featureLevel = "compatibility";
    adapter = await gpu.requestAdapter(ro as GPURequestAdapterOptions);
  } catch (e) {
    throw new MonobenchError(`${kind}: requestAdapter failed: ${errMsg(e)}`, hint);
  }
  if (!adapter) throw new MonobenchError(`${kind}: no GPU adapter available`, hint);
  const requiredLimits: Record<string, number> = {};
  const al = adapter.limits as unknown as Record<string, number>;
  for (const name of LIMITS) {
    const v = al[name];
    if (typeof v === "number" && Number.isFinite(v)) requiredLimits[name] = v;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits });
  } catch (e) {
    throw new MonobenchError(`${kind}: requestDevice failed: ${errMsg(e)}`, hint);
  }
  const description = describeAdapter(kind, adapter);
  return { kind, device, adapter, description, software: isSoftwareAdapter(description) };
}
