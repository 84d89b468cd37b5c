/**
 * User SAE modules (`--sae-module FILE`): imported once; registerSae checks every variant they
 * register for the hooks the trainer calls, so a missing one is a clear error at start, not a
 * crash in the middle of training.
 */
import { toFileUrl } from "../util/paths.ts";
import { listSaes } from "../sae/registry.ts";
import { MonobenchError } from "../util/errors.ts";

/** Import user SAE modules (absolute paths); returns the names of the variants they registered. */
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
    // registerSae checks each variant's hooks as the module registers it.
    const fresh = listSaes().filter((n) => !before.has(n));
    added.push(...fresh);
  }
  return added;
}
