/**
 * Paths given by a user are resolved against the directory the user ran the command in.
 * `deno task` runs a task in the directory of deno.json and passes the invoking directory in
 * `INIT_CWD` (keeping an inherited one); it also sets `npm_config_user_agent` to `deno/…`, which
 * is how a task run is told apart from `deno run` with a stale `INIT_CWD` in the environment.
 */
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The repository root (the directory of deno.json). */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");

/** The directory the user invoked the command from. */
export function callerCwd(env: (k: string) => string | undefined = (k) => Deno.env.get(k)): string {
  const init = env("INIT_CWD");
  const agent = env("npm_config_user_agent") ?? "";
  if (init && isAbsolute(init) && agent.startsWith("deno/")) return init;
  return Deno.cwd();
}

/** A user-given path as an absolute path (relative ones against `base`, default the caller's cwd). */
export function userPath(p: string, base: string = callerCwd()): string {
  return resolve(base, p);
}

/** Whether `inner` is `outer` or lies inside it (both absolute, normalised). */
export function isWithin(inner: string, outer: string): boolean {
  const a = resolve(inner), b = resolve(outer);
  return a === b || a.startsWith(b.endsWith("/") ? b : `${b}/`);
}

/** A file URL for an absolute path (for dynamic imports). */
export function toFileUrl(p: string): string {
  return pathToFileURL(resolve(p)).href;
}

/**
 * Make the caller's directory the working directory, so that every relative path a user gives a
 * task (also inside specs such as `last:train=acts/a.npy`) means what it means in their shell.
 * For tasks that keep no files of their own under relative paths.
 */
export function enterCallerCwd(): void {
  const cwd = callerCwd();
  if (cwd !== Deno.cwd()) Deno.chdir(cwd);
}
