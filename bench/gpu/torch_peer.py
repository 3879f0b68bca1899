"""PyTorch peer timings for bench/gpu/run.sh: scaled_dot_product_attention on the flash backend
(FlashAttention-2 kernels) at T = S = 4096, 32 heads, D = 128, causal, bf16; and bf16 matmul
x (M, 8192) @ w (8192, 8192)^T at M = 1, 16, 128. CUDA events, median of 20 after warm-up.
Prints JSON."""
import json

import torch
import torch.nn.functional as F


def median_ms(fn, warm=5, reps=20):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
T, H, D = 4096, 32, 128
q, k, v = (torch.randn(1, H, T, D, dtype=torch.bfloat16, device="cuda") for _ in range(3))
try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
except ImportError:
    with torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False):
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
flops = 4 * T * T * D * H / 2
out["sdpa_flash"] = {"ms": ms, "tflops": flops / (ms / 1e3) / 1e12}
w = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
out["matmul_bf16"] = []
for M in (1, 16, 128):
    x = torch.randn(M, 8192, dtype=torch.bfloat16, device="cuda")
    ms = median_ms(lambda: x @ w.t(), reps=50)
    out["matmul_bf16"].append({"M": M, "ms": ms})
print(json.dumps(out))
