/**
 * Standard ReLU SAE with an L1 penalty: loss = mean_b ||x − x̂||² + λ · mean_b ||f_b||₁, with the
 * same decoder constraint (unit rows, projected gradients) as the other variants. Inference is a
 * plain ReLU (SAELens "standard"); no threshold, no AuxK by default.
 */
import type { SaeVariant } from "./types.ts";
import { linearInitDecoder, reluActivation } from "./common.ts";

export const reluL1: SaeVariant = {
  name: "relu",
  description: "ReLU SAE with L1 penalty λ (standard SAE; plain ReLU at inference)",
  architecture: "standard",
  defaults: { l1: 0.05, auxkAlpha: 0, groupFractions: [1] },
  usesK: false,
  tracksThreshold: false,
  groups: (cfg) => [cfg.width],
  reconWeights: () => [1],
  initDecoder: linearInitDecoder,
  trainCapacity: (cfg, rows) => rows * cfg.width,
  trainActivation: reluActivation,
  penalty: (a) => a.backend.l1Grad(a.codes, a.gradVal, a.cfg.l1 / a.rows, a.stats, a.slot),
  inferenceCapacity: (cfg, rows) => rows * cfg.width,
  inferenceActivation: reluActivation,
};
