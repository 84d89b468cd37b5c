/**
 * Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
 * Autoencoders"), written against the public API only. With x_c = x − b_dec:
 *   gate      π_gate = W_enc x_c + b_gate,            f_gate = H(π_gate)
 *   magnitude π_mag  = exp(r_mag) ⊙ (W_enc x_c) + b_mag, f_mag = ReLU(π_mag)   (W_enc shared)
 *   f = f_gate ⊙ f_mag,  x̂ = W_dec f + b_dec
 *   L = ||x − x̂||² + λ ||ReLU(π_gate)||₁ + ||x − x̂_frozen(ReLU(π_gate))||²
 * where x̂_frozen decodes with detached copies of W_dec and b_dec, so the auxiliary loss trains
 * the gate path only. Decoder rows are kept at unit norm (the trainer's constraint), so the L1 term
 * needs no decoder-norm weighting. The Heaviside gate has no gradient: the gate path learns from
 * the L1 and auxiliary terms, the magnitudes from the reconstruction.
 *
 *   deno task reproduce --sae-module examples/gated.ts --sae gated --grid "layers=last eps=1,4"
 *
 * λ is the config's `l1`. Exported as SAELens "gated" (W_enc, b_gate, r_mag, b_mag, W_dec, b_dec).
 */
import {
  centered,
  col,
  decodeSparse,
  linearInitDecoder,
  mse,
  type Pattern,
  registerSae,
  reluPre,
  type SaeModelVariant,
  type Tape,
  type Var,
} from "../mod.ts";

/** Dense f = f_gate ⊙ f_mag without a gradient, from the post-ReLU gate pre-activations. */
function denseActs(t: Tape, gate: Var, p: Record<string, Var>): Var {
  // Where the gate is open, W_enc x_c = π_gate − b_gate.
  return t.map("select(g > 0, relu((g - bg) * exp(r) + bm), 0)", {
    g: gate,
    bg: col(t.detach(p.b_gate)),
    r: col(t.detach(p.r_mag)),
    bm: col(t.detach(p.b_mag)),
  });
}

function activeCodes(t: Tape, f: Var, cap: number): Pattern {
  return t.select(f, 0, { cap, strict: true });
}

export const gated: SaeModelVariant = {
  kind: "model",
  name: "gated",
  description: "Gated SAE (separate gate and magnitude paths sharing W_enc; L1 + auxiliary gate loss)",
  architecture: "gated",
  defaults: { auxkAlpha: 0, groupFractions: [1], l1: 0.05 },
  usesK: false,
  params: (cfg) => [
    { name: "W_enc", shape: [cfg.width, cfg.d], role: "Wenc", units: "none" },
    { name: "b_gate", shape: [cfg.width], role: "benc", units: "input" },
    { name: "r_mag", shape: [cfg.width], units: "none" },
    { name: "b_mag", shape: [cfg.width], units: "input" },
    { name: "W_dec", shape: [cfg.width, cfg.d], role: "Wdec", units: "none", unitRows: true },
    { name: "b_dec", shape: [cfg.d], role: "bdec", units: "input" },
  ],
  initDecoder: linearInitDecoder,

  forward({ tape: t, cfg, rows, x, p, track }) {
    const cap = rows * cfg.width;
    const xc = centered(t, x, p.b_dec);
    const gate = reluPre(t, x, p.W_enc, p.b_gate, p.b_dec);
    // Magnitudes on the active entries (gate open and π_mag > 0): the reconstruction path.
    const active = activeCodes(t, denseActs(t, gate, p), cap);
    const f = t.map("relu(h * exp(r) + b)", {
      h: t.sddmm(active, xc, p.W_enc),
      r: col(p.r_mag),
      b: col(p.b_mag),
    });
    track(active, f);
    const loss = mse(t, decodeSparse(t, f, p.W_dec, p.b_dec), x);
    // ReLU(π_gate) on the open gates: the L1 penalty and the auxiliary reconstruction.
    const open = t.select(gate, 0, { cap, strict: true });
    const g = t.map("h + b", { h: t.sddmm(open, xc, p.W_enc), b: col(p.b_gate) });
    const penalty = t.sum("a * s", { a: g, s: cfg.l1 / rows });
    const aux = mse(t, decodeSparse(t, g, t.detach(p.W_dec), t.detach(p.b_dec)), x);
    return { loss, penalty, aux };
  },

  encode({ tape: t, cfg, rows, x, p }) {
    const f = denseActs(t, reluPre(t, x, p.W_enc, p.b_gate, p.b_dec), p);
    const codes = activeCodes(t, f, rows * cfg.width);
    return { codes, acts: t.gatherEntries(codes, f) };
  },
};

registerSae(gated);
