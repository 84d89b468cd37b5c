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

/** Register a variant under `variant.name` (replacing one of the same name only if `replace`). */
export function registerSae(variant: SaeVariant, opts: { replace?: boolean } = {}): void {
  check(
    typeof variant.name === "string" && /^[a-z0-9][a-z0-9_-]*$/.test(variant.name),
    `SAE variant name must be lower-case letters, digits, - or _; got ${JSON.stringify(variant.name)}`,
  );
  check(!registry.has(variant.name) || opts.replace, `SAE variant "${variant.name}" is already registered`);
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
