/**
 * Checkpoint hooks of tape-based architectures ({@link SaeModelVariant}), called by
 * checkpoint.ts: raw-unit conversion of their extra parameters, the SAELens tensors of the
 * inference checkpoint (the architecture-export hook) and its inverse, and the extra training
 * state (weights and Adam moments) of a resumable checkpoint. Every function returns null / {}
 * for fused variants, which checkpoint.ts handles itself.
 */
import { getSae } from "../sae/registry.ts";
import { type ExportTensor, isModelVariant, type SaeConfig, type SaeParams } from "../sae/types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import type { HostOptState, HostWeights } from "./engine.ts";
import { modelParams } from "./model_engine.ts";

/** Reads a checkpoint tensor by name with the expected shape (throws MonobenchError). */
export type TensorGetter = (name: string, shape: number[]) => Float32Array;

function model(cfg: SaeConfig) {
  const v = getSae(cfg.variant);
  return isModelVariant(v) ? v : null;
}

function finite(a: Float32Array, what: string): Float32Array {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new MonobenchError(`${what}: non-finite value ${a[i]} at element ${i}`);
  }
  return a;
}

/** The extra parameters in raw units (inputs not divided by `normFactor`), see ParamUnits. */
export function rawExtra(
  cfg: SaeConfig,
  extra: Record<string, Float32Array> | undefined,
  normFactor: number,
): Record<string, Float32Array> | undefined {
  const v = model(cfg);
  if (!v) return undefined;
  const out: Record<string, Float32Array> = {};
  for (const s of modelParams(v, cfg)) {
    if (s.role) continue;
    const a = extra?.[s.name];
    if (!a) throw new MonobenchError(`variant ${v.name}: missing parameter ${s.name}`);
    const lg = Math.log(normFactor);
    out[s.name] = s.units === "input"
      ? a.map((x) => x * normFactor)
      : s.units === "log-input"
      ? a.map((x) => x + lg)
      : a.slice();
  }
  return out;
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/**
 * Architecture-export hook: the safetensors of a model variant's inference checkpoint
 * (SAELens layout: W_enc [d, ω], the other parameters under their names), or null for a fused
 * variant.
 */
export function modelSaeLensTensors(params: SaeParams): Record<string, ExportTensor> | null {
  const v = model(params.cfg);
  if (!v) return null;
  const { d, width } = params.cfg;
  for (const [n, a] of Object.entries(params.extra ?? {})) finite(a, `parameter ${n}`);
  if (v.saeLensTensors) return v.saeLensTensors(params);
  const out: Record<string, ExportTensor> = {};
  for (const s of modelParams(v, params.cfg)) {
    if (s.role === "Wenc") out[s.name] = { shape: [d, width], data: transpose(params.Wenc, width, d) };
    else if (s.role) out[s.name] = { shape: s.shape, data: params[s.role] };
    else {
      const a = params.extra?.[s.name];
      check(a && a.length === s.shape.reduce((x, y) => x * y, 1), `SAE params lack ${s.name}`);
      out[s.name] = { shape: s.shape, data: a };
    }
  }
  return out;
}

/** Inverse of {@link modelSaeLensTensors}: the SaeParams of a model checkpoint, or null. */
export function modelParamsFromSaeLens(
  cfg: SaeConfig,
  threshold: number,
  normFactor: number,
  get: TensorGetter,
): SaeParams | null {
  const v = model(cfg);
  if (!v) return null;
  const { d, width } = cfg;
  const specs = modelParams(v, cfg);
  const core = (r: "Wenc" | "benc" | "Wdec" | "bdec") => {
    const s = specs.find((p) => p.role === r)!;
    return r === "Wenc" ? transpose(get(s.name, [d, width]), d, width) : get(s.name, s.shape);
  };
  const extra = v.fromSaeLens
    ? v.fromSaeLens(cfg, get)
    : Object.fromEntries(specs.filter((s) => !s.role).map((s) => [s.name, get(s.name, s.shape)]));
  for (const s of specs) {
    if (s.role) continue;
    const a = extra[s.name];
    check(a && a.length === s.shape.reduce((x, y) => x * y, 1), `checkpoint lacks parameter ${s.name}`);
    finite(a, `parameter ${s.name}`);
  }
  return {
    cfg,
    Wenc: core("Wenc"),
    benc: core("benc"),
    Wdec: core("Wdec"),
    bdec: core("bdec"),
    threshold,
    normFactor,
    extra,
  };
}

/** Training-state tensors of the extra parameters: `extra.<name>`, `adam_m.extra.<name>`, … */
export function modelStateTensors(
  cfg: SaeConfig,
  weights: HostWeights,
  opt: HostOptState,
): Record<string, ExportTensor> {
  const v = model(cfg);
  if (!v) return {};
  const out: Record<string, ExportTensor> = {};
  for (const s of modelParams(v, cfg)) {
    if (s.role) continue;
    const sets: [string, HostWeights][] = [["", weights], ["adam_m.", opt.m], ["adam_v.", opt.v]];
    for (const [prefix, set] of sets) {
      const a = set.extra?.[s.name];
      check(a, `training state lacks ${prefix}${s.name}`);
      out[`${prefix}extra.${s.name}`] = { shape: s.shape, data: a };
    }
  }
  return out;
}

/** Reads back {@link modelStateTensors} into `weights`, `opt.m` and `opt.v` (no-op for fused variants). */
export function readModelState(
  cfg: SaeConfig,
  get: TensorGetter,
  weights: HostWeights,
  opt: HostOptState,
): void {
  const v = model(cfg);
  if (!v) return;
  for (const [prefix, set] of [["", weights], ["adam_m.", opt.m], ["adam_v.", opt.v]] as const) {
    set.extra = {};
    for (const s of modelParams(v, cfg)) {
      if (!s.role) {
        set.extra[s.name] = finite(get(`${prefix}extra.${s.name}`, s.shape), `${prefix}extra.${s.name}`);
      }
    }
  }
}
