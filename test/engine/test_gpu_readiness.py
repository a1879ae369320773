"""Choices that depend on the device, checked on the CPU with stand-ins for CUDA's answers: profiling waits
for the model's own device, `vision_dtype: auto` follows the device's compute capability, and the blur's
kernel is built in float64 on the host once, never on the maps' device."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ovss_ros.engine import profiling
from ovss_ros.pnp_ovss import postprocess
from ovss_ros.pnp_ovss import segmenter as segmenter_module
from ovss_ros.engine.config import auto_half_dtype, check_vision_dtype, vision_autocast_dtype
from ovss_ros.pgseg import segmenter as pgseg_module
from ovss_ros.engine.segmenter import Segmenter
from ovss_ros.engine.profiling import Stopwatch

SMALL = dict(image_size=None, gradcam_layer=1, gradcam_head=2)


# -- profiling waits for the model's device ---------------------------------------------------------
@pytest.fixture
def synchronized(monkeypatch):
    """What torch.cuda.synchronize was asked to wait for (None: the current device)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    return calls


def test_sync_device_names_the_cuda_device_and_skips_the_cpu(synchronized):
    profiling.sync_device(torch.device("cuda", 1))
    profiling.sync_device("cuda:2")
    profiling.sync_device("cpu")
    assert synchronized == [torch.device("cuda", 1), torch.device("cuda", 2)]


def test_profiled_stages_wait_for_the_stopwatch_device_not_the_current_one(synchronized):
    watch = Stopwatch(torch.device("cuda", 1), profile=True)
    watch.lap("vision")
    watch.lap("text")
    assert synchronized == [torch.device("cuda", 1)] * 2
    synchronized.clear()
    Stopwatch(torch.device("cuda", 1), profile=False).lap("vision")
    assert synchronized == []


@pytest.fixture(scope="module")
def engines(tiny_blip_dir, tiny_pgseg_dir):
    pnp = Segmenter.from_pretrained(str(tiny_blip_dir), preset="realtime", device="cpu", **SMALL)
    pg = Segmenter.from_pretrained(str(tiny_pgseg_dir), preset="tiny", device="cpu")
    for seg in (pnp, pg):
        seg.set_vocabulary(["red", "dog"])
    return {"pnp_ovss": pnp, "pgseg": pg}


@pytest.mark.parametrize("method", ["pnp_ovss", "pgseg"])
def test_both_segmenters_wait_per_stage_on_their_own_device_when_profiling(method, engines, rgb, monkeypatch):
    seg = engines[method]
    waits = []
    monkeypatch.setattr(profiling, "sync_device", waits.append)    # the stopwatch both segmenters use
    monkeypatch.setattr(seg, "profile", True)
    result = seg.segment(rgb)
    stages = set(result.timings) - {"total"}
    assert stages and len(waits) >= len(stages)
    assert all(w == seg.device for w in waits), waits
    waits.clear()
    monkeypatch.setattr(seg, "profile", False)
    seg.segment(rgb)
    assert waits == []


# -- vision_dtype: auto by compute capability --------------------------------------------------------
@pytest.fixture
def capability(monkeypatch):
    """Stand-in for torch.cuda.get_device_capability: set `value`, read the devices it was asked about."""
    class Stub:
        value = (8, 0)
        asked = []

    def get(device=None):
        Stub.asked.append(device)
        return Stub.value

    Stub.asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", get)
    return Stub


@pytest.mark.parametrize("cap,expected", [((7, 0), "float16"), ((7, 2), "float16"), ((7, 5), "float16"),
                                          ((8, 0), "bfloat16"), ((8, 7), "bfloat16"), ((9, 0), "bfloat16")])
def test_auto_picks_bf16_only_where_the_gpu_runs_it(cap, expected, capability):
    capability.value = cap
    assert auto_half_dtype(torch.device("cuda", 0)) == expected
    assert vision_autocast_dtype("auto", "float32", torch.device("cuda", 0)) == expected
    assert vision_autocast_dtype("auto", "float32", "cuda:1") == expected
    assert capability.asked[-1] == torch.device("cuda", 1)        # the device asked about, not the current one
    assert vision_autocast_dtype("auto", "float32", "cpu") is None
    # given explicitly, the capability is not queried
    capability.asked.clear()
    assert vision_autocast_dtype("auto", "float32", "cuda", capability=cap) == expected
    assert capability.asked == []


@pytest.mark.parametrize("weights", ["bfloat16", "float16"])
@pytest.mark.parametrize("cap", [(7, 5), (8, 0)])
def test_auto_keeps_half_weights_so_it_never_pairs_two_half_types(weights, cap, capability):
    capability.value = cap
    check_vision_dtype("auto", weights)                      # never refused
    assert vision_autocast_dtype("auto", weights, torch.device("cuda", 0)) is None
    with pytest.raises(ValueError, match="cannot run over"):
        other = {"bfloat16": "float16", "float16": "bfloat16"}[weights]
        check_vision_dtype(other, weights)


@pytest.mark.parametrize("method,module", [("pnp_ovss", segmenter_module), ("pgseg", pgseg_module)])
def test_the_encoder_pass_asks_with_the_device_itself(method, module, engines, rgb, monkeypatch):
    """A device type ('cuda') cannot say which GPU's capability decides: the segmenters pass their device."""
    seg = engines[method]
    asked = []
    real = module.vision_autocast_dtype
    monkeypatch.setattr(module, "vision_autocast_dtype", lambda *a, **k: asked.append(a[2]) or real(*a, **k))
    seg.segment(rgb)
    assert asked and all(isinstance(d, torch.device) and d == seg.device for d in asked), asked


# -- the blur kernel ----------------------------------------------------------------------------------
def _formula(sigma, truncate, dtype, device):
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.7, 25.0])
def test_cached_kernel_equals_the_formula_bit_for_bit(sigma, dtype):
    radius = int(4.0 * sigma + 0.5)
    k = postprocess.gaussian_kernel(sigma, radius, dtype, torch.device("cpu"))
    assert k.dtype == dtype and k.shape == (2 * radius + 1,)
    assert torch.equal(k, _formula(sigma, 4.0, dtype, "cpu"))


class _Created(TorchDispatchMode):
    """(dtype, device type) of every tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.seen.append((t.dtype, t.device.type))
        return out


def test_no_float64_on_the_maps_device_and_none_at_all_once_cached():
    # a meta tensor stands in for an accelerator: nothing float64 may be made there
    maps = torch.empty(2, 30, 40, device="meta")
    with _Created() as created:
        out = postprocess.gaussian_blur(maps, 2.3)
    assert out.shape == maps.shape and out.device.type == "meta"
    assert (torch.float64, "meta") not in created.seen, created.seen
    # the second frame with the same sigma reuses the kernel: no float64 work anywhere
    x = torch.rand(2, 30, 40)
    first = postprocess.gaussian_blur(x, 1.9)
    with _Created() as created:
        again = postprocess.gaussian_blur(x, 1.9)
    assert torch.equal(first, again)
    assert all(dtype != torch.float64 for dtype, _ in created.seen), created.seen
