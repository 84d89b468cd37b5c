/** Shared plumbing of the CLI entry points in tasks/. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { MonobenchError } from "./errors.ts";

/** Where a CLI writes: stdout lines and stderr lines (replaceable in tests). */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export const defaultIo: Io = { out: (l) => console.log(l), err: (l) => console.error(l) };

/**
 * Run a CLI body and map errors to exit codes: a MonobenchError (bad input or option) prints
 * `monobench: <message>` and its hint and gives 2; anything else is unexpected and gives 3.
 */
export async function runCli(body: () => Promise<number>, io: Io = defaultIo): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof MonobenchError) {
      io.err(`monobench: ${e.message}`);
      if (e.hint) io.err(`hint: ${e.hint}`);
      return 2;
    }
    io.err(`monobench: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 3;
  }
}

/**
 * `node:util` parseArgs in strict mode for `deno task <task>`; its errors (unknown option, missing
 * value) become MonobenchErrors that point at `--help`.
 */
export function parseOptions<T extends ParseArgsConfig>(
  task: string,
  config: T,
): ReturnType<typeof parseArgs<T & { strict: true }>> {
  try {
    return parseArgs({ ...config, strict: true });
  } catch (e) {
    throw new MonobenchError((e as Error).message, `see deno task ${task} --help`);
  }
}
