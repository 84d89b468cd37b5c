import { equal, ok } from "node:assert/strict";
import { formatDuration, Progress } from "../src/report/progress.ts";

function fakeClock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

Deno.test("progress: plain mode prints periodic lines, no control codes", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const p = new Progress({ write: (s) => out.push(s), tty: false, now: clock.now, plainIntervalMs: 1000 });
  equal(p.tty, false);
  p.start(2);
  p.beginCase(1, "batchtopk-last-x1-k20", 100);
  for (let s = 1; s <= 100; s++) {
    clock.advance(50); // 20 steps/s → a line every 20 steps
    p.step(s);
  }
  p.setPhase("eval", 4);
  clock.advance(500);
  p.step(4);
  p.endCase("R² 70.1");
  p.beginCase(2, "matryoshka-last-x1-k20", 10);
  p.log("a message");
  clock.advance(2000);
  p.step(10);
  p.endCase();
  p.finish();
  const text = out.join("");
  ok(!text.includes("\r") && !text.includes("\x1b"), "no carriage returns or escape codes");
  ok(out.every((l) => l.endsWith("\n")), "whole lines only");
  const lines = text.trimEnd().split("\n");
  equal(lines[0], "case 1/2 batchtopk-last-x1-k20: step 0/100");
  const periodic = lines.filter((l) => l.startsWith("case 1/2 batchtopk-last-x1-k20 step"));
  equal(periodic.length, 5); // at 1 s, 2 s, … 5 s
  ok(
    periodic[0].includes("step 20/100 20%") && periodic[0].includes(" 20 step/s") &&
      periodic[0].includes("ETA 0:04"),
  );
  ok(periodic[0].includes("total ETA"), periodic[0]);
  ok(lines.includes("case 1/2 batchtopk-last-x1-k20: eval 0/4"));
  ok(
    lines.some((l) => /^case 1\/2 batchtopk-last-x1-k20 done in 0:0\d: R² 70\.1 \| total ETA 0:0\d$/.test(l)),
    text,
  );
  ok(lines.includes("a message"));
  ok(lines.some((l) => l.startsWith("case 2/2 matryoshka-last-x1-k20 step 10/10 100%")));
  equal(lines[lines.length - 1], "finished 2 case(s) in 0:08");
});

Deno.test("progress: TTY mode redraws one line with \\r and a bar", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const p = new Progress({ write: (s) => out.push(s), tty: true, now: clock.now, ttyIntervalMs: 100 });
  p.start(1);
  p.beginCase(1, "c", 10);
  for (let s = 1; s <= 10; s++) {
    clock.advance(30);
    p.step(s);
  }
  p.log("hello");
  p.endCase();
  const text = out.join("");
  ok(text.includes("\r\x1b[2K"));
  ok(text.includes("[########################] step 10/10 100%"), text);
  ok(text.includes("[......"));
  // throttled: fewer redraws than steps (first, every ≥100 ms, and the last)
  const draws = out.filter((s) => s.startsWith("\r\x1b[2Kcase")).length;
  ok(draws >= 3 && draws < 10, `${draws} redraws`);
  // a message clears the line, prints, and redraws
  const i = out.indexOf("hello\n");
  ok(i > 0 && out[i - 1] === "\r\x1b[2K" && out[i + 1].startsWith("\r\x1b[2Kcase 1/1 c"));
  ok(out[out.length - 1].startsWith("case 1/1 c done in"));
});

Deno.test("progress: NO_COLOR / CI select plain mode; durations", () => {
  const prev = Deno.env.get("NO_COLOR");
  Deno.env.set("NO_COLOR", "1");
  try {
    equal(new Progress({ write: () => {} }).tty, false);
  } finally {
    if (prev === undefined) Deno.env.delete("NO_COLOR");
    else Deno.env.set("NO_COLOR", prev);
  }
  equal(formatDuration(0), "0:00");
  equal(formatDuration(75), "1:15");
  equal(formatDuration(3725), "1:02:05");
  equal(formatDuration(NaN), "?");
});

Deno.test("progress: the run ETA rescales cost weights by the time spent inside cases", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const p = new Progress({ write: (s) => out.push(s), tty: false, now: clock.now, plainIntervalMs: 1e9 });
  // Weights in estimated seconds: a cheap first case, then two that cost 10× and 30× as much.
  p.start(3, [1, 10, 30]);
  clock.advance(60_000); // time before the first case (data preparation) must not count
  p.beginCase(1, "a", 10);
  clock.advance(1800);
  p.step(10);
  p.setPhase("eval", 1);
  clock.advance(200);
  p.step(1);
  p.endCase("ok");
  // 2 s for weight 1 → 2 s per unit → 40 units left = 80 s.
  ok(out.some((l) => l.startsWith("case 1/3 a done in 0:02: ok | total ETA 1:20")), out.join(""));
  p.beginCase(2, "b", 100);
  clock.advance(9000);
  p.step(50); // half of training = 45 % of the case: 4.5 units in 9 s; 2 s/unit overall
  const eta = p.runEta();
  ok(Math.abs(eta - (41 - 5.5) * (11 / 5.5)) < 1e-6, `eta ${eta}`);
  // Without weights every case counts the same; no ETA before any progress.
  const q = new Progress({ write: () => {}, tty: false, now: clock.now });
  q.start(4);
  ok(Number.isNaN(q.runEta()));
  q.beginCase(1, "x", 10);
  clock.advance(1000);
  q.step(10);
  q.endCase();
  equal(Math.round(q.runEta()), 3);

  // Reused cases are no work left; two lanes halve the time left while both can be busy.
  const r = new Progress({ write: () => {}, tty: false, now: clock.now });
  r.start(6, undefined, 2);
  r.skipCase(1);
  r.skipCase(2);
  r.beginCase(3, "c", 10);
  r.beginCase(4, "d", 10);
  clock.advance(1000);
  r.step(10, 3);
  r.endCase("", 3);
  r.step(10, 4);
  r.endCase("", 4);
  // 2 cases done in 2 s of case time → 1 s each; 2 left over 2 lanes → 1 s.
  equal(Math.round(r.runEta()), 1);
});
