/** File-system helpers of the importers. */
import { join } from "node:path";
import { MonobenchError } from "../util/errors.ts";

export interface ListedEntry {
  name: string;
  isFile: boolean;
  isDirectory: boolean;
}

/**
 * The entries of `dir`, sorted by name, with symbolic links resolved (a Hugging Face download
 * links files into its cache); dangling links are left out.
 */
export async function listDir(dir: string): Promise<ListedEntry[]> {
  const out: ListedEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isSymlink) {
        out.push({ name: e.name, isFile: e.isFile, isDirectory: e.isDirectory });
        continue;
      }
      const st = await Deno.stat(join(dir, e.name)).catch(() => null);
      if (st) out.push({ name: e.name, isFile: st.isFile, isDirectory: st.isDirectory });
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new MonobenchError(`folder not found: ${dir}`);
    throw new MonobenchError(`cannot list ${dir}: ${(e as Error).message}`);
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
