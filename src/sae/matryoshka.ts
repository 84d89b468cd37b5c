/**
 * Matryoshka-BatchTopK SAE (dictionary_learning `MatroyshkaBatchTopKSAE`, as used by the paper).
 * BatchTopK activation and threshold as {@link batchTopK}; the reconstruction loss is summed over
 * nested latent prefixes (group fractions 1/16, 1/8, 1/4, 9/16 → sizes int(f·ω), remainder last).
 *
 * Loss weighting: "reference" (default) reproduces the public code, `mean_i(w_i · L_i)` with
 * w_i = 1/G, i.e. (1/G²)·Σ_i L_i; "paper" is Eq. 4, Σ_i L_i.
 */
import type { SaeVariant } from "./types.ts";
import { batchTopKActivation, batchTopKCapacity, kaimingInitDecoder, thresholdActivation } from "./common.ts";
import { groupBounds } from "./config.ts";

/** The group fractions of `scripts/monosemanticity_score.sh`. */
export const MATRYOSHKA_FRACTIONS: readonly number[] = [0.0625, 0.125, 0.25, 0.5625];

export const matryoshka: SaeVariant = {
  name: "matryoshka",
  description: "Matryoshka BatchTopK SAE (nested-prefix reconstruction loss, groups 1/16, 1/8, 1/4, 9/16)",
  architecture: "jumprelu",
  defaults: { k: 20, auxkAlpha: 0.03, groupFractions: [...MATRYOSHKA_FRACTIONS], lossWeighting: "reference" },
  tracksThreshold: true,
  validate: (cfg) => void groupBounds(cfg.groupFractions, cfg.width),
  groups: (cfg) => groupBounds(cfg.groupFractions, cfg.width),
  reconWeights: (cfg) => {
    const G = cfg.groupFractions.length;
    return new Array(G).fill(cfg.lossWeighting === "paper" ? 1 : 1 / (G * G));
  },
  initDecoder: kaimingInitDecoder,
  trainCapacity: (cfg, rows) => batchTopKCapacity(cfg.k, rows, cfg.width),
  trainActivation: (a) => batchTopKActivation(a, a.cfg.k),
  inferenceCapacity: (cfg, rows, useThreshold) =>
    useThreshold ? rows * cfg.width : batchTopKCapacity(cfg.k, rows, cfg.width),
  inferenceActivation: (a) => a.useThreshold ? thresholdActivation(a) : batchTopKActivation(a, a.cfg.k),
};
