#!/usr/bin/env bash
# The one GPU script (../shared/device/README.md): on a machine with an NVIDIA GPU and no Node,
# unpack Node, run the CUDA correctness checks against the CPU ops, then the timings and the
# PyTorch peer, and print a short table last. Needs only .device/node.xz, build/ and dist/
# (run it from the repository root with carry: [".device", "build", "dist"]).
set -uo pipefail
xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
OUT=${OUT:-/tmp/tessera-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
# The tensor-core instructions in the shipped SASS (where cuobjdump exists).
if command -v cuobjdump > /dev/null; then
  cuobjdump -sass build/cuda/Release/tessera_cuda.node | grep -oE '\b(HMMA|IMMA|LDSM)[.A-Z0-9]*' | sort | uniq -c > "$OUT/sass.txt"
else
  echo 'cuobjdump not available' > "$OUT/sass.txt"
fi
cat "$OUT/sass.txt"
node bench/gpu/check.mjs 2>&1 | tee "$OUT/check.txt"
check=${PIPESTATUS[0]}
node bench/gpu/time.mjs --json "$OUT/tessera.json" 2>&1 | tee "$OUT/time.txt"
python3 bench/gpu/torch_peer.py > "$OUT/torch.json" 2> "$OUT/torch.err" || echo '{}' > "$OUT/torch.json"
tail -3 "$OUT/torch.err" 2>/dev/null
node bench/gpu/table.mjs "$OUT/tessera.json" "$OUT/torch.json" | tee "$OUT/table.md"
echo "correctness checks: $([ "$check" = 0 ] && echo all passed || echo FAILED, see $OUT/check.txt)"
exit "$check"
