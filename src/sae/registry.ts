/**
 * Registry of SAE variants. Built-ins: batchtopk, matryoshka, topk, relu. Add your own variant
 * (fused or tape-based, see types.ts) in its own file and call `registerSae(variant)` before
 * training.
 */
import { check, MonobenchError } from "../util/errors.ts";
import { type FusedSaeVariant, isModelVariant, type SaeVariant } from "./types.ts";
import { batchTopK } from "./batchtopk.ts";
import { matryoshka } from "./matryoshka.ts";
import { topK } from "./topk.ts";
import { reluL1 } from "./relu.ts";

const registry = new Map<string, SaeVariant>();

const FUSED_HOOKS = [
  "groups",
  "reconWeights",
  "initDecoder",
  "trainCapacity",
  "trainActivation",
  "inferenceCapacity",
  "inferenceActivation",
] as const;
const MODEL_HOOKS = ["params", "initDecoder", "forward", "encode"] as const;
const OPTIONAL_HOOKS = ["validate", "penalty", "saeLensTensors", "fromSaeLens"] as const;

/** Problems of a variant's shape (missing or non-function hooks, bad fields); empty = fine. */
export function variantProblems(v: SaeVariant): string[] {
  const o = v as unknown as Record<string, unknown>;
  const out: string[] = [];
  const hooks = isModelVariant(v) ? MODEL_HOOKS : FUSED_HOOKS;
  for (const h of hooks) {
    if (typeof o[h] !== "function") {
      out.push(`hook ${h}() is ${o[h] === undefined ? "missing" : "not a function"}`);
    }
  }
  for (const h of OPTIONAL_HOOKS) {
    if (o[h] !== undefined && typeof o[h] !== "function") out.push(`${h} is not a function`);
  }
  if (typeof o.description !== "string") out.push(`"description" is not a string`);
  if (typeof o.architecture !== "string") out.push(`"architecture" is not a string`);
  if (o.defaults === null || typeof o.defaults !== "object") out.push(`"defaults" is not an object`);
  if (!isModelVariant(v) && typeof o.tracksThreshold !== "boolean") {
    out.push(`"tracksThreshold" is not a boolean`);
  }
  return out;
}

/** Register a variant under `variant.name` (replacing one of the same name only if `replace`). */
export function registerSae(variant: SaeVariant, opts: { replace?: boolean } = {}): void {
  check(
    typeof variant.name === "string" && /^[a-z0-9][a-z0-9_-]*$/.test(variant.name),
    `SAE variant name must be lower-case letters, digits, - or _; got ${JSON.stringify(variant.name)}`,
  );
  check(!registry.has(variant.name) || opts.replace, `SAE variant "${variant.name}" is already registered`);
  const problems = variantProblems(variant);
  check(
    problems.length === 0,
    `variant "${variant.name}" is incomplete: ${problems.join("; ")}`,
    "see examples/matryoshka_topk.ts (fused) or examples/jumprelu.ts (tape-based) for a complete variant",
  );
  registry.set(variant.name, variant);
}

/** Look up a variant; unknown names throw a MonobenchError listing the known ones. */
export function getSae(name: string): SaeVariant {
  const v = registry.get(name);
  if (!v) throw new MonobenchError(`unknown SAE variant "${name}" (known: ${listSaes().join(", ")})`);
  return v;
}

/** Look up a fused variant (its activation hooks); a tape-based one throws a MonobenchError. */
export function getFusedSae(name: string): FusedSaeVariant {
  const v = getSae(name);
  if (isModelVariant(v)) throw new MonobenchError(`SAE variant "${name}" is tape-based, not a fused variant`);
  return v;
}

/** Names of the registered variants, built-ins first. */
export function listSaes(): string[] {
  return [...registry.keys()];
}

for (const v of [batchTopK, matryoshka, topK, reluL1]) registerSae(v);
