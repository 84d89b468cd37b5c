/** Shared plumbing of the CLI entry points in tasks/. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { asIoError, MonobenchError } from "./errors.ts";

/** Where a CLI writes: stdout lines and stderr lines (replaceable in tests). */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export const defaultIo: Io = { out: (l) => console.log(l), err: (l) => console.error(l) };

/**
 * Run a CLI body and map errors to exit codes: a MonobenchError (bad input or option) prints
 * `monobench: <message>` and its hint and gives 2, and so does an I/O error of the environment
 * (disk full, read-only, no permission); anything else is unexpected and gives 3.
 */
export async function runCli(body: () => Promise<number>, io: Io = defaultIo): Promise<number> {
  try {
    return await body();
  } catch (e0) {
    const e = asIoError(e0, "I/O error");
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
 * node:util parseArgs reads `--steps -1` as a missing value followed by an option ("ambiguous");
 * join a negative-number value to its option so that the option's own validation can name it.
 */
function joinNegativeValues(args: readonly string[], config: ParseArgsConfig): string[] {
  const opts = config.options ?? {};
  const takesValue = (a: string): boolean => {
    if (a.startsWith("--")) return opts[a.slice(2)]?.type === "string";
    if (/^-[A-Za-z]$/.test(a)) {
      return Object.values(opts).some((o) => o.short === a.slice(1) && o.type === "string");
    }
    return false;
  };
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      out.push(...args.slice(i));
      break;
    }
    const next = args[i + 1];
    if (takesValue(a) && next !== undefined && /^-(\d|\.\d|inf)/i.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
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
    const c = config.args ? { ...config, args: joinNegativeValues(config.args, config) } : config;
    return parseArgs({ ...(c as T), strict: true });
  } catch (e) {
    throw new MonobenchError((e as Error).message, `see deno task ${task} --help`);
  }
}
