"""benchmarks/bench_cpu_kernels.py: the split of a float32 factor into two bfloat16 parts, on which its
"float32 split into bf16 parts" route rests, is lossless where it must be and accurate to about 2^-16."""
from __future__ import annotations

import torch


def test_bf16_parts_are_bf16_exact_and_sum_to_the_factor(benchmark_script):
    t = torch.randn(64, 96, generator=torch.Generator().manual_seed(0)) * 10.0 ** torch.arange(-3, 3).repeat(16)[:96]
    hi, lo = benchmark_script("bench_cpu_kernels").bf16_parts(t)
    assert hi.dtype == lo.dtype == torch.float32
    for part in (hi, lo):                      # converting to bf16 loses nothing: the oneDNN mode sees them exactly
        assert torch.equal(part.bfloat16().float(), part)
    one_part = (t - hi).abs() / t.abs()
    two_parts = (t - (hi + lo)).abs() / t.abs()
    assert one_part.max() > 2.0 ** -10         # bf16 alone: about 2^-9
    assert two_parts.max() < 2.0 ** -15        # hi + lo: about 2^-17


def test_split_product_matches_float64_to_the_split_precision(benchmark_script):
    torch.manual_seed(0)
    b = benchmark_script("bench_cpu_kernels")
    x, w = torch.randn(8, 32), torch.randn(16, 32)
    (x_hi, x_lo), (w_hi, w_lo) = b.bf16_parts(x), b.bf16_parts(w)
    split = torch.cat([x_hi, x_hi, x_lo], 1).double() @ torch.cat([w_hi, w_lo, w_hi], 1).double().T
    exact = x.double() @ w.double().T
    plain = x.bfloat16().double() @ w.bfloat16().double().T
    scale = exact.abs().max()
    assert (split - exact).abs().max() / scale < 1e-4
    assert (split - exact).abs().max() < (plain - exact).abs().max() / 50
