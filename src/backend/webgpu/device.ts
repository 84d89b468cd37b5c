/**
 * Adapter/device acquisition for the two WebGPU implementations:
 * - "webgpu": Deno's built-in `navigator.gpu` (wgpu): Vulkan/Metal/D3D12 on a GPU; on a Linux
 *   machine without one, Mesa's lavapipe/llvmpipe (software Vulkan) if installed. No flags needed.
 * - "dawn": Dawn through `npm:webgpu`: Vulkan with core features first (hardware GPUs), then
 *   OpenGL on Mesa with `EGL_PLATFORM=surfaceless` and a compatibility-mode adapter
 *   ({@link DAWN_ROUTES}).
 *
 * Dawn's JS `GPU` object (from `create()`) owns the native instance, but the devices it creates
 * poll that instance through a raw pointer. If the `GPU` object is garbage-collected while a
 * device lives, the next poll reads freed memory: SIGSEGV, SIGABRT or a hang, a few thousand
 * submissions in (docs/dawn.md). So every `GPU` object created here stays referenced for the life
 * of the process (`dawnInstances`).
 *
 * The device is created with the adapter's maximum limits for everything the kernels care about
 * (binding sizes, buffer size, storage buffers per stage, workgroup sizes…).
 */
import { MonobenchError } from "../../util/errors.ts";

export type GpuKind = "webgpu" | "dawn";

export interface DeviceOptions {
  /** Use this GPU object instead of `navigator.gpu` / Dawn (tests inject a fake one). */
  gpu?: GPU;
  /** Dawn `create()` options, with a compatibility-mode adapter (default: the routes of
   * {@link DAWN_ROUTES} in order). */
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

/**
 * One Dawn instance per option set, never released: dropping one that has devices is a
 * use-after-free in the bindings (see the header). Module scope keeps them reachable.
 */
const dawnInstances = new Map<string, GPU>();

/** A way to reach an adapter through Dawn: `create()` options and the feature level. */
interface DawnRoute {
  options: string[];
  featureLevel: "core" | "compatibility";
}

/**
 * Dawn routes, tried in order: Vulkan with core features (hardware GPUs), then OpenGL in
 * compatibility mode (Mesa llvmpipe, whose lavapipe 22 Dawn rejects for Vulkan).
 * `MONOBENCH_DAWN=vulkan|opengl|opengles` forces one route.
 */
export const DAWN_ROUTES: Readonly<Record<string, DawnRoute>> = {
  vulkan: { options: ["backend=vulkan"], featureLevel: "core" },
  opengl: { options: ["backend=opengl"], featureLevel: "compatibility" },
  opengles: { options: ["backend=opengles"], featureLevel: "compatibility" },
};
const DAWN_DEFAULT_ORDER = ["vulkan", "opengl"];

function dawnRoutes(opts: DeviceOptions): DawnRoute[] {
  if (opts.dawnOptions) return [{ options: opts.dawnOptions, featureLevel: "compatibility" }];
  let forced: string | undefined;
  try {
    forced = Deno.env.get("MONOBENCH_DAWN") || undefined;
  } catch { /* no env permission: default order */ }
  if (forced === undefined) return DAWN_DEFAULT_ORDER.map((r) => DAWN_ROUTES[r]);
  const route = DAWN_ROUTES[forced];
  if (!route) {
    throw new MonobenchError(
      `MONOBENCH_DAWN=${forced} is not a Dawn route`,
      `use one of: ${Object.keys(DAWN_ROUTES).join(", ")} (or unset it)`,
    );
  }
  return [route];
}

async function dawnInstance(options: string[]): Promise<GPU> {
  try {
    if (!Deno.env.get("EGL_PLATFORM")) Deno.env.set("EGL_PLATFORM", "surfaceless");
  } catch { /* no env permission: Dawn may still work if the caller set it */ }
  let mod: { create: (o: string[]) => unknown };
  try {
    mod = await import("webgpu") as unknown as { create: (o: string[]) => unknown };
  } catch (e) {
    throw new MonobenchError(`cannot load Dawn (npm:webgpu): ${errMsg(e)}`, HINT_DAWN);
  }
  const key = JSON.stringify(options);
  const cached = dawnInstances.get(key);
  if (cached) return cached;
  try {
    const gpu = mod.create(options) as GPU;
    dawnInstances.set(key, gpu);
    return gpu;
  } catch (e) {
    throw new MonobenchError(`Dawn create() failed: ${errMsg(e)}`, HINT_DAWN);
  }
}

/** The first adapter of the candidates: `navigator.gpu`, or the Dawn routes in order. */
async function getAdapter(kind: GpuKind, opts: DeviceOptions): Promise<GPUAdapter | null> {
  const powerPreference = opts.powerPreference ?? "high-performance";
  const request = async (gpu: GPU, extra: Record<string, unknown>) => {
    try {
      return await gpu.requestAdapter({ powerPreference, ...extra } as GPURequestAdapterOptions);
    } catch (e) {
      const hint = kind === "dawn" ? HINT_DAWN : HINT_WEBGPU;
      throw new MonobenchError(`${kind}: requestAdapter failed: ${errMsg(e)}`, hint);
    }
  };
  if (opts.gpu) return await request(opts.gpu, kind === "dawn" ? { featureLevel: "compatibility" } : {});
  if (kind === "webgpu") {
    const gpu = (navigator as unknown as { gpu?: GPU }).gpu;
    if (!gpu) {
      throw new MonobenchError("WebGPU is not available in this Deno runtime (navigator.gpu)", HINT_WEBGPU);
    }
    return await request(gpu, {});
  }
  for (const route of dawnRoutes(opts)) {
    const adapter = await request(await dawnInstance(route.options), { featureLevel: route.featureLevel });
    if (adapter) return adapter;
  }
  return null;
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

/** An adapter's one-line description, without creating a device (cheap, and safe to leave). */
export interface AdapterProbe {
  kind: GpuKind;
  description: string;
  software: boolean;
}

/**
 * Find the adapter `acquireDevice` would use and describe it, without creating a device. Throws
 * MonobenchError when there is none (or Dawn cannot load). A Dawn adapter alone keeps no event
 * poll running, so unlike a device it is safe when the isolate is torn down.
 */
export async function probeAdapter(kind: GpuKind, opts: DeviceOptions = {}): Promise<AdapterProbe> {
  const adapter = await getAdapter(kind, opts);
  if (!adapter) {
    throw new MonobenchError(`${kind}: no GPU adapter available`, kind === "dawn" ? HINT_DAWN : HINT_WEBGPU);
  }
  const description = describeAdapter(kind, adapter);
  return { kind, description, software: isSoftwareAdapter(description) };
}

/**
 * Let the event loop turn after destroying a Dawn device, so that the bindings run the event poll
 * that is still queued. A Dawn device alive (or destroyed without this) when an isolate is torn
 * down — the end of a `deno test` or `deno bench` module, a Worker — crashes the process: teardown
 * frees the instance before that poll runs (docs/dawn.md). A plain `deno run` exit is not affected.
 */
export async function settleDawn(): Promise<void> {
  await new Promise((r) => setTimeout(r, 10));
}

/**
 * Whether the machine exposes a GPU device node (Linux DRM render node or NVIDIA device). Without
 * one no hardware adapter can exist; `auto` uses this to skip probing Dawn on CPU-only machines.
 * Other systems: true (unknown).
 */
export function hasGpuDeviceNode(): boolean {
  if (Deno.build.os !== "linux") return true;
  for (const p of ["/dev/dri", "/dev/nvidia0", "/dev/nvidiactl"]) {
    try {
      Deno.statSync(p);
      return true;
    } catch { /* absent, or no read permission */ }
  }
  return false;
}

export async function acquireDevice(kind: GpuKind, opts: DeviceOptions = {}): Promise<AcquiredDevice> {
  const hint = kind === "dawn" ? HINT_DAWN : HINT_WEBGPU;
  const adapter = await getAdapter(kind, opts);
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
