#!/usr/bin/env bash
# One-shot Dawn vs built-in WebGPU check on a machine with a GPU (about 8 minutes):
#   1. the machine, and the adapter each route gives;
#   2. the 10⁵-step soak (tasks/soak_dawn.ts, `deno task soak:dawn`) on Dawn and on the built-in WebGPU, side by side
#      (in parallel, each stopped after SOAK_MINUTES, default 4), each checked against the CPU;
#   3. the training-step bench (bench/dawn/steps.ts): built-in vs Dawn (Vulkan and OpenGL routes).
# Offline machines: prepare .gpu-carry/ first with bench/dawn/gpu_bundle.sh and carry it; the
# script then unpacks Deno, its cache and the GL/Vulkan loaders, and runs from a copy of the tree
# without deno.lock (the lock names packages the bundle does not hold). Everything is logged to
# $OUT/gpu_run.log (OUT defaults to /tmp/monobench-gpu).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/monobench-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_run.log") 2>&1
export NO_COLOR=1 XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
SOAK_MINUTES=${SOAK_MINUTES:-4}
SOAK_STEPS=${SOAK_STEPS:-100000} # fewer for a quick try of this script on a CPU machine
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }

if [ -d .gpu-carry ]; then
  stamp "unpacking .gpu-carry"
  # Into / as the device notes say, on the (throwaway) GPU machine only, never on a workstation.
  if command -v nvidia-smi >/dev/null; then
    for f in .gpu-carry/gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig || true
  fi
  if ! command -v deno >/dev/null; then
    mkdir -p /tmp/mb-bin && xz -dc .gpu-carry/deno.xz >/tmp/mb-bin/deno && chmod +x /tmp/mb-bin/deno
    export PATH=/tmp/mb-bin:$PATH
  fi
  export DENO_DIR=/tmp/mb-deno-dir
  mkdir -p "$DENO_DIR" && tar -C "$DENO_DIR" -xJf .gpu-carry/deno_dir.tar.xz
  rm -rf /tmp/mb-tree && mkdir -p /tmp/mb-tree
  tar --exclude=./.git --exclude=./.gpu-carry --exclude=./results --exclude=./.cache -cf - . | tar -xf - -C /tmp/mb-tree
  rm -f /tmp/mb-tree/deno.lock
  cd /tmp/mb-tree
fi
# The NVIDIA driver's ICD files, where the loaders do not find them by themselves.
nv=/usr/local/nvidia/share
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f $nv/vulkan/icd.d/nvidia_icd.json ] &&
  export VK_DRIVER_FILES=$nv/vulkan/icd.d/nvidia_icd.json
[ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f $nv/glvnd/egl_vendor.d/10_nvidia.json ] &&
  export __EGL_VENDOR_LIBRARY_FILENAMES=$nv/glvnd/egl_vendor.d/10_nvidia.json

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
deno --version | head -n 1
ldd --version 2>&1 | head -n 1
lib=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
[ -n "$lib" ] && echo "libstdc++: $(strings "$lib" | grep -E '^GLIBCXX_3\.4\.[0-9]+$' | sort -V | tail -n 1)"

stamp "adapters"
for route in "" vulkan opengl; do
  MONOBENCH_DAWN=$route deno eval "
    const { probeAdapter } = await import('./src/backend/webgpu/device.ts');
    for (const k of ['webgpu', 'dawn']) {
      if ('$route' && k === 'webgpu') continue;
      try { const p = await probeAdapter(k); console.log('${route:-default}', k, '->', p.description); }
      catch (e) { console.log('${route:-default}', k, '-> unavailable:', e.message.split('\n')[0]); }
    }" 2>&1 | grep -v '^Warning: max'
done

stamp "soaks (Dawn and built-in WebGPU in parallel, ${SOAK_MINUTES} min each, then each checked on the CPU)"
limit=$((SOAK_MINUTES * 60 + 150))
pids=()
for gpu in dawn webgpu; do
  # deno run, not deno task: offline, `deno task` first tries to fetch every package of deno.json.
  timeout "$limit" deno run -A tasks/soak_dawn.ts --gpu "$gpu" --steps "$SOAK_STEPS" --minutes "$SOAK_MINUTES" \
    --dir "/tmp/mb-soak-$gpu" \
    >"$OUT/soak_$gpu.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" # not a bare wait: that would wait for the tee of the log too
for gpu in dawn webgpu; do
  echo "-- soak on $gpu"
  grep -v '^Warning: \|^    at \|^$' "$OUT/soak_$gpu.log" | tail -n 25
done

stamp "training-step bench"
timeout 240 deno bench -A bench/dawn/steps.ts 2>&1 | grep -v '^Warning: \|^    at '
stamp "done"
