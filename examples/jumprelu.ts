/**
 * JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"), written against the public API only:
 * f_j(x) = z_j · H(z_j − θ_j) with z = W_enc(x − b_dec) + b_enc and learned per-latent thresholds
 * θ = exp(log_threshold). The jump has no gradient; the threshold gets the straight-through
 * pseudo-derivative with a rectangle kernel of bandwidth ε:
 *   ∂f/∂θ ≈ −(θ/ε)·rect((z − θ)/ε),   ∂H(z − θ)/∂θ ≈ −(1/ε)·rect((z − θ)/ε),
 * and the loss is mean ||x − x̂||² + λ·mean_b Σ_j H(z_bj − θ_j) (the L0 penalty).
 *
 * Only entries with z > θ − ε/2 can carry a gradient (active ones, or inside the rectangle
 * window), so the pre-activations are selected densely without a gradient and recomputed on those
 * entries on the tape: exact gradients at sparse cost. Exported as SAELens "jumprelu" with the
 * per-latent `threshold`.
 *
 *   deno task reproduce --sae-module examples/jumprelu.ts --sae jumprelu --grid "layers=last eps=1,4"
 *
 * Options (`options` in the config): l0 (λ), bandwidth (ε), initThreshold (θ at step 0), all in
 * the trainer's normalised units.
 */
import {
  centered,
  check,
  col,
  decodeSparse,
  densePre,
  linearInitDecoder,
  mse,
  preOn,
  registerSae,
  type SaeModelVariant,
} from "../mod.ts";

const positive = (v: unknown, what: string) =>
  check(typeof v === "number" && Number.isFinite(v) && v > 0, `jumprelu: ${what} must be > 0, got ${v}`);

/** The JumpReLU forward expression and its straight-through derivatives. */
const JUMP = "z * step(z - th)";
const JUMP_GRADS = { z: "step(z - th)", th: "-(th / eps) * rect((z - th) / eps)" };
const L0_GRADS = { z: "0", th: "-(s / eps) * rect((z - th) / eps)" };

export const jumpReLU: SaeModelVariant = {
  kind: "model",
  name: "jumprelu",
  description: "JumpReLU SAE (learned per-latent thresholds, straight-through estimator, L0 penalty)",
  architecture: "jumprelu",
  defaults: {
    auxkAlpha: 0,
    groupFractions: [1],
    options: { l0: 0.02, bandwidth: 0.001, initThreshold: 0.001 },
  },
  usesK: false,
  validate: (cfg) => {
    const l0 = cfg.options.l0;
    check(typeof l0 === "number" && Number.isFinite(l0) && l0 >= 0, `jumprelu: l0 must be >= 0, got ${l0}`);
    positive(cfg.options.bandwidth, "bandwidth");
    positive(cfg.options.initThreshold, "initThreshold");
  },
  params: (cfg) => [
    { name: "W_enc", shape: [cfg.width, cfg.d], role: "Wenc", units: "none" },
    { name: "b_enc", shape: [cfg.width], role: "benc", units: "input" },
    { name: "W_dec", shape: [cfg.width, cfg.d], role: "Wdec", units: "none", unitRows: true },
    { name: "b_dec", shape: [cfg.d], role: "bdec", units: "input" },
    {
      name: "log_threshold",
      shape: [cfg.width],
      units: "log-input",
      init: Math.log(cfg.options.initThreshold as number),
    },
  ],
  initDecoder: linearInitDecoder,

  forward({ tape: t, cfg, rows, x, p, track }) {
    const eps = cfg.options.bandwidth as number, lam = cfg.options.l0 as number;
    const xc = centered(t, x, p.b_dec);
    const z = densePre(t, xc, p.W_enc, p.b_enc);
    const th = t.map("exp(l)", { l: p.log_threshold });
    const thC = t.detach(th);
    // Entries that can carry a gradient, and the active ones (what the trainer tracks).
    const window = t.select(t.map("z - th + eps / 2", { z, th: col(thC), eps }), 0, {
      cap: rows * cfg.width,
      strict: true,
    });
    const active = t.select(t.map("z - th", { z, th: col(thC) }), 0, { cap: rows * cfg.width, strict: true });
    track(active, t.gatherEntries(active, z));
    const zw = preOn(t, window, xc, p.W_enc, p.b_enc);
    const f = t.map(JUMP, { z: zw, th: col(th), eps }, { grads: JUMP_GRADS });
    const loss = mse(t, decodeSparse(t, f, p.W_dec, p.b_dec), x);
    const penalty = t.sum("step(z - th) * s", { z: zw, th: col(th), s: lam / rows, eps }, "scalar", {
      grads: L0_GRADS,
    });
    return { loss, penalty };
  },

  encode({ tape: t, cfg, rows, x, p }) {
    const z = densePre(t, centered(t, x, p.b_dec), p.W_enc, p.b_enc);
    const th = t.map("exp(l)", { l: p.log_threshold });
    const codes = t.select(t.map("z - th", { z, th: col(th) }), 0, { cap: rows * cfg.width, strict: true });
    return { codes, acts: t.gatherEntries(codes, z) };
  },

  // SAELens stores the threshold itself.
  saeLensTensors: (sae) => {
    const { d, width } = sae.cfg;
    const WencT = new Float32Array(d * width);
    for (let j = 0; j < width; j++) for (let i = 0; i < d; i++) WencT[i * width + j] = sae.Wenc[j * d + i];
    return {
      W_enc: { shape: [d, width], data: WencT },
      b_enc: { shape: [width], data: sae.benc },
      W_dec: { shape: [width, d], data: sae.Wdec },
      b_dec: { shape: [d], data: sae.bdec },
      threshold: { shape: [width], data: sae.extra!.log_threshold.map(Math.exp) },
    };
  },
  fromSaeLens: (cfg, get) => {
    const th = get("threshold", [cfg.width]);
    check(th.every((v) => v > 0), "jumprelu: thresholds must be positive");
    return { log_threshold: th.map(Math.log) };
  },
};

registerSae(jumpReLU);
