/** Learning-rate formulas and the reference schedule (dictionary_learning `get_lr_schedule`). */
import { check } from "../util/errors.ts";

/**
 * "code": what the public scripts produce, 2e-4 / sqrt(ω / 2^14) (= 16 / (625·√ω));
 * "paper": paper §4.1, 16 / (125·√ω) (5× larger); or an explicit number.
 */
export type LrSpec = "code" | "paper" | number;

/** Base learning rate for width ω. */
export function resolveLr(spec: LrSpec, width: number): number {
  check(Number.isSafeInteger(width) && width > 0, `width must be a positive integer, got ${width}`);
  if (spec === "code") return 2e-4 / Math.sqrt(width / 2 ** 14);
  if (spec === "paper") return 16 / (125 * Math.sqrt(width));
  check(
    typeof spec === "number" && Number.isFinite(spec) && spec > 0,
    `lr must be "code", "paper" or a positive number, got ${JSON.stringify(spec)}`,
  );
  return spec;
}

/**
 * LR multiplier at 0-based update `step` (torch LambdaLR: the first update uses factor(0) = 0
 * when warming up): linear warmup step/warmup, then 1, then (if decayStart is set) a linear decay
 * (steps − step)/(steps − decayStart) from decayStart on.
 */
export function lrFactor(
  step: number,
  steps: number,
  warmupSteps: number,
  decayStart: number | null,
): number {
  if (step < warmupSteps) return step / warmupSteps;
  if (decayStart !== null && step >= decayStart) return (steps - step) / (steps - decayStart);
  return 1;
}

/** Validate a schedule as the reference asserts do (MonobenchError instead of AssertionError). */
export function checkSchedule(steps: number, warmupSteps: number, decayStart: number | null): void {
  check(Number.isSafeInteger(steps) && steps >= 1, `steps must be a positive integer, got ${steps}`);
  check(
    Number.isSafeInteger(warmupSteps) && warmupSteps >= 0 && warmupSteps < steps,
    `warmupSteps must be an integer in [0, steps=${steps}), got ${warmupSteps}`,
    "short runs need a shorter warmup, e.g. warmupSteps ≈ steps/10 (and thresholdStartStep likewise)",
  );
  if (decayStart !== null) {
    check(
      Number.isSafeInteger(decayStart) && decayStart > warmupSteps && decayStart < steps,
      `decayStart must be an integer in (warmupSteps=${warmupSteps}, steps=${steps}), got ${decayStart}`,
    );
  }
}
