"""The CPU routes to a faster ViT that keep float32-sized errors, measured (issue 18).

bench_cpu_precision.py shows the realtime frame's ViT running near this CPU's float32 peak and plain
bfloat16 perturbing the image tokens too much for the 99.9 % label-agreement goal. This script measures what
is left between those two, in one process:

1. one product of the ViT's MLP shape (442 tokens x 768 -> 3072, BLIP-base at 336 px) in each route, with
   its time and its largest error relative to a float64 product:
   - float32; bfloat16 and float16 tensors;
   - float32 tensors with oneDNN's reduced-precision mode (`torch.set_float32_matmul_precision("medium")`:
     bf16 operands, float32 accumulation and output);
   - the same mode on "split" operands: each float32 factor written as the sum of two bf16-exact parts (hi +
     lo), and the product as hi*hi + hi*lo + lo*hi, one product with a three times longer inner dimension.
     The parts convert without loss, so the error is about 2^-16 instead of 2^-8, at three bf16 products'
     cost plus the conversions;
2. the ViT alone (BLIP-base, random weights, 336 px, SDPA attention as the segmenter runs it) eager and
   through torch.compile (inductor, weights frozen into the graph), with the compile time and the largest
   difference of the output.

    .venv/bin/python benchmarks/bench_cpu_kernels.py      # writes benchmarks/results/cpu_kernels.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ovss_ros.pnp_ovss.tiny_model import build_blip  # noqa: E402
from ovss_ros.pnp_ovss.vision_attention import use_sdpa  # noqa: E402

TOKENS, WIDTH, HIDDEN = 442, 768, 3072     # BLIP-base ViT at 336 px: 21x21 patches + [CLS]; its MLP


def median_seconds(fn, reps: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bf16_parts(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 t = hi + lo (to about 2^-16), both exactly representable in bfloat16, kept as float32."""
    hi = t.bfloat16().float()
    return hi, (t - hi).bfloat16().float()


def product_routes(reps: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(TOKENS, WIDTH, generator=gen)
    w = torch.randn(HIDDEN, WIDTH, generator=gen) / WIDTH ** 0.5
    exact = x.double() @ w.double().T
    w_hi, w_lo = bf16_parts(w)
    w_split = torch.cat([w_hi, w_lo, w_hi], dim=1).contiguous()      # pairs with [x_hi, x_hi, x_lo]

    def split_product():
        x_hi, x_lo = bf16_parts(x)
        return F.linear(torch.cat([x_hi, x_hi, x_lo], dim=1), w_split)

    routes = {
        "float32": (lambda: F.linear(x, w), "highest"),
        "bfloat16 tensors": (lambda: F.linear(x.bfloat16(), w.bfloat16()), "highest"),
        "float16 tensors": (lambda: F.linear(x.half(), w.half()), "highest"),
        "float32, oneDNN bf16 mode": (lambda: F.linear(x, w), "medium"),
        "float32 split into bf16 parts, oneDNN bf16 mode": (split_product, "medium"),
    }
    out = {}
    before = torch.get_float32_matmul_precision()
    try:
        for name, (fn, precision) in routes.items():
            torch.set_float32_matmul_precision(precision)
            seconds = median_seconds(fn, reps)
            err = ((fn().double() - exact).abs().max() / exact.abs().max()).item()
            out[name] = {"ms": 1e3 * seconds, "gflops": 2 * TOKENS * WIDTH * HIDDEN / seconds / 1e9,
                         "max_relative_error": err}
            print(f"[kernels] {name}: {1e3 * seconds:.2f} ms, error {err:.1e}", flush=True)
    finally:
        torch.set_float32_matmul_precision(before)
    base = out["float32"]["ms"]
    for v in out.values():
        v["speedup_vs_float32"] = base / v["ms"]
    return out


def vit_compiled(reps: int) -> dict:
    import torch._inductor.config as inductor_config

    model, _ = build_blip(["person", "car"], architecture="base", seed=0, real_vocab=True, sharpness=1.0)
    model.eval().requires_grad_(False)
    vision = use_sdpa(model.vision_model)
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(1))

    def eager(px=pixels):
        return vision(pixel_values=px, interpolate_pos_encoding=True)[0]

    inductor_config.freezing = True
    compiled = torch.compile(eager)
    with torch.no_grad():
        ref = eager()
        t = time.perf_counter()
        got = compiled()
        compile_s = time.perf_counter() - t
        eager_s = median_seconds(eager, reps)
        compiled_s = median_seconds(compiled, reps)
        eager_again_s = median_seconds(eager, reps)
    result = {"eager_s": statistics.fmean([eager_s, eager_again_s]), "compiled_s": compiled_s,
              "first_call_s": compile_s, "max_abs_diff": (got - ref).abs().max().item()}
    result["speedup"] = result["eager_s"] / compiled_s
    print(f"[kernels] ViT eager {result['eager_s']:.3f} s, inductor {compiled_s:.3f} s "
          f"(x{result['speedup']:.2f}; first call {compile_s:.0f} s)", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30, help="timed calls per product route (the ViT: a third)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cpu_kernels.json")
    a = ap.parse_args()
    result = {
        "what": __doc__.split("\n\n")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "load_average_1min_start": os.getloadavg()[0],
        "product": {"shape": [TOKENS, WIDTH, HIDDEN], "routes": product_routes(a.reps)},
        "vit_base_336": vit_compiled(max(3, a.reps // 3)),
        "load_average_1min_end": os.getloadavg()[0],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"[kernels] wrote {a.out}")


if __name__ == "__main__":
    main()
