/** Generic SAE config defaults and validation (variant defaults are layered on top). */
import { check, MonobenchError } from "../util/errors.ts";
import type { OptionValue, SaeConfig, SaeVariant } from "./types.ts";

/** Defaults shared by all variants (docs/REFERENCE.md "Training step"; scripts: α = 0.03, K = 20). */
export const GENERIC_SAE_DEFAULTS: Omit<SaeConfig, "variant" | "d" | "width"> = {
  k: 20,
  auxkAlpha: 0.03,
  deadAfterTokens: 10_000_000,
  thresholdBeta: 0.999,
  thresholdStartStep: 1000,
  groupFractions: [1],
  lossWeighting: "reference",
  l1: 0,
  options: {},
};

/** Keys a user may set on an SAE config. */
export const SAE_CONFIG_KEYS: readonly string[] = [
  "variant",
  "d",
  "width",
  ...Object.keys(GENERIC_SAE_DEFAULTS),
];

/** Input of {@link resolveSaeConfig}: variant, d, width required; the rest optional. */
export type SaeConfigInput = Partial<SaeConfig> & { variant: string; d: number; width: number };

function isInt(x: unknown, min: number): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= min;
}

function isNum(x: unknown, min: number): x is number {
  return typeof x === "number" && Number.isFinite(x) && x >= min;
}

/** Merge generic defaults, the variant's defaults and the input, and validate. */
export function resolveSaeConfig(variant: SaeVariant, input: SaeConfigInput): SaeConfig {
  for (const key of Object.keys(input)) {
    check(
      SAE_CONFIG_KEYS.includes(key),
      `unknown SAE config key "${key}" (known: ${SAE_CONFIG_KEYS.join(", ")})`,
    );
  }
  const vd = variant.defaults;
  const options: Record<string, OptionValue> = { ...(vd.options ?? {}) };
  for (const [k, v] of Object.entries(input.options ?? {})) {
    check(
      k in options,
      `variant ${variant.name} has no option "${k}" (known: ${Object.keys(options).join(", ")})`,
    );
    options[k] = v;
  }
  const cfg: SaeConfig = {
    ...GENERIC_SAE_DEFAULTS,
    ...vd,
    ...Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)),
    options,
  } as SaeConfig;
  cfg.groupFractions = [...cfg.groupFractions];
  check(cfg.variant === variant.name, `config variant ${cfg.variant} != ${variant.name}`);
  check(isInt(cfg.d, 1), `d must be a positive integer, got ${cfg.d}`);
  check(isInt(cfg.width, 1), `width must be a positive integer, got ${cfg.width}`);
  check(isInt(cfg.k, 1), `k must be a positive integer, got ${cfg.k}`);
  check(variant.usesK === false || cfg.k <= cfg.width, `k must be <= width=${cfg.width}, got ${cfg.k}`);
  check(isNum(cfg.auxkAlpha, 0), `auxkAlpha must be a finite number >= 0, got ${cfg.auxkAlpha}`);
  check(isNum(cfg.deadAfterTokens, 1), `deadAfterTokens must be >= 1, got ${cfg.deadAfterTokens}`);
  check(
    isNum(cfg.thresholdBeta, 0) && cfg.thresholdBeta < 1,
    `thresholdBeta must be in [0, 1), got ${cfg.thresholdBeta}`,
  );
  check(
    isInt(cfg.thresholdStartStep, 0),
    `thresholdStartStep must be an integer >= 0, got ${cfg.thresholdStartStep}`,
  );
  check(
    Array.isArray(cfg.groupFractions) && cfg.groupFractions.length >= 1 &&
      cfg.groupFractions.every((f) => isNum(f, 0) && f > 0),
    `groupFractions must be a non-empty list of positive numbers, got ${JSON.stringify(cfg.groupFractions)}`,
  );
  const sum = cfg.groupFractions.reduce((a, b) => a + b, 0);
  check(Math.abs(sum - 1) <= 1e-9 * Math.max(1, Math.abs(sum)), `groupFractions must sum to 1, got ${sum}`);
  check(
    cfg.lossWeighting === "reference" || cfg.lossWeighting === "paper",
    `lossWeighting must be "reference" or "paper", got ${JSON.stringify(cfg.lossWeighting)}`,
  );
  check(isNum(cfg.l1, 0), `l1 must be a finite number >= 0, got ${cfg.l1}`);
  variant.validate?.(cfg);
  return cfg;
}

/**
 * Group sizes as the reference computes them: `int(f·ω)` for all but the last group, the
 * remainder for the last. Throws if a group would be empty.
 */
export function groupSizes(fractions: number[], width: number): number[] {
  const sizes = fractions.slice(0, -1).map((f) => Math.floor(f * width));
  sizes.push(width - sizes.reduce((a, b) => a + b, 0));
  if (sizes.some((s) => s <= 0)) {
    throw new MonobenchError(
      `groupFractions ${JSON.stringify(fractions)} give an empty group for width ${width} (sizes ${sizes})`,
    );
  }
  return sizes;
}

/** Cumulative group bounds (the Matryoshka prefixes), last = width. */
export function groupBounds(fractions: number[], width: number): number[] {
  let acc = 0;
  return groupSizes(fractions, width).map((s) => (acc += s));
}
