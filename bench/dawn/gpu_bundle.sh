#!/usr/bin/env bash
# Prepares .gpu-carry/ for bench/dawn/gpu_run.sh, which runs on a bare GPU machine without network
# access: Deno itself (xz), a Deno cache with only the npm packages that the soak and the step bench
# import (Dawn's linux-x64 build only), and the Debian GL/Vulkan loader packages. About 40 MB.
# Run from a checkout on a Linux x86-64 machine with network access; keep .gpu-carry/ out of git:
#   echo /.gpu-carry/ >> .git/info/exclude
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu-carry
rm -rf "$out"
mkdir -p "$out/gl"

deno_bin=$(deno eval 'console.log(Deno.execPath())')
xz -T0 -6 -c "$deno_bin" >"$out/deno.xz"

dd=$(mktemp -d)
trap 'rm -rf "$dd"' EXIT
# --no-lock: only the packages of these entry points (the lock file would pull in all of them).
DENO_DIR="$dd" deno cache --no-lock tasks/soak_dawn.ts bench/dawn/steps.ts bench/dawn/repro.ts
# Dawn ships every platform's build; keep Linux x86-64 only (files or per-platform folders).
find "$dd/npm/registry.npmjs.org/webgpu" -mindepth 3 -maxdepth 3 -path '*/dist/*' ! -name 'linux-x64*' \
  -exec rm -rf {} +
tar -C "$dd" -cJf "$out/deno_dir.tar.xz" .

# GL/Vulkan loaders (the GPU machine may have the NVIDIA driver but no loaders).
lists=$(mktemp -d)
mkdir -p "$lists/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${o[@]}" update >/dev/null
(cd "$out/gl" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
rm -rf "$lists"

du -sh "$out"
echo "now: device run with carry [\".gpu-carry\"] and command: bash bench/dawn/gpu_run.sh"
