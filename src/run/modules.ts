/**
 * User SAE modules (`--sae-module FILE`): imported once, and every variant they register is
 * checked for the hooks the trainer calls, so a missing one is a clear error at start, not a
 * crash in the middle of training.
 */
import { toFileUrl } from "../util/paths.ts";
import { getSae, listSaes } from "../sae/registry.ts";
import { isModelVariant, type SaeVariant } from "../sae/types.ts";
import { MonobenchError } from "../util/errors.ts";

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

/** Import user SAE modules (absolute paths) and check what they register; returns the new names. */
export async function loadSaeModules(paths: readonly string[]): Promise<string[]> {
  const added: string[] = [];
  for (const p of paths) {
    const before = new Set(listSaes());
    try {
      await import(toFileUrl(p));
    } catch (e) {
      if (e instanceof MonobenchError) throw new MonobenchError(`SAE module ${p}: ${e.message}`, e.hint);
      throw new MonobenchError(
        `cannot load SAE module ${p}: ${(e as Error).message.split("\n")[0]}`,
        "the module must be a TypeScript file that calls registerSae(...)",
      );
    }
    const fresh = listSaes().filter((n) => !before.has(n));
    for (const name of fresh) {
      const problems = variantProblems(getSae(name));
      if (problems.length) {
        throw new MonobenchError(
          `SAE module ${p}: variant "${name}" is incomplete: ${problems.join("; ")}`,
          "see examples/matryoshka_topk.ts for a complete variant",
        );
      }
    }
    added.push(...fresh);
  }
  return added;
}
