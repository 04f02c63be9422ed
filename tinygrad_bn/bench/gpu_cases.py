"""The GPU half of the bench (`--device cuda`): ours on CuPy against PyTorch CUDA eager.

The cases are the CPU bench's layer cases, moved to the device: the ResNet-20 convolutions, every
normalizer PyTorch also has, and a ResNet-20 training step. GPU work is asynchronous, so each
timed call ends with a synchronize of its own framework's stream; both sides pay the same.

BatchNorm's achieved memory bandwidth is reported against two peaks: the card's theoretical one
(memory clock x bus width, where the driver reports them) and a measured device-to-device copy.
Its bytes are the least any implementation must move, counted from the shapes: forward reads x
and writes y, backward reads x and dy and writes dx, so 5 x numel x itemsize in all.

`device` and `torch_device` are parameters so that the tests can run every case on fakegpu and
PyTorch's CPU, where no GPU is present; no timing is asserted there.
"""
import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import backend
from tinygrad_bn.bench import nn_cases

BN_SHAPE = (128, 64, 32, 32)  # the ResNet stage-1 activation at batch 128, float32


def _synchronizers(device, torch, torch_device):
    def ours():
        if backend.as_device(device).type == "cuda":
            backend.array_module(device).cuda.get_current_stream().synchronize()

    def theirs():
        if torch_device.startswith("cuda"):
            torch.cuda.synchronize()
    return ours, theirs


def _synced(fn, sync):
    def run():
        fn()
        sync()
    return run


def _pair(shape, torch, device, torch_device, seed=0, requires_grad=True):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return (tg.tensor(x, device=device, requires_grad=requires_grad),
            torch.tensor(x, device=torch_device, requires_grad=requires_grad))


def conv_cases(torch, device, torch_device, quick=False):
    cases = []
    for n, cin, hw, cout, stride in [(64, 32, 32, 32, 1)] + ([] if quick else nn_cases.RESNET20_CONVS):
        conv = tg.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        tconv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        with torch.no_grad():
            tconv.weight.copy_(torch.tensor(conv.weight.detach().numpy()))
        conv.to(device), tconv.to(torch_device)
        x, tx = _pair((n, cin, hw, hw), torch, device, torch_device)
        out_hw = (hw + 2 - 3) // stride + 1
        g, tgrad = _pair((n, cout, out_hw, out_hw), torch, device, torch_device, 1, False)
        cases.append((f"conv3x3 {n}x{cin}x{hw}x{hw}->{cout} s{stride} f+b",
                      nn_cases._fwd_bwd(conv, x, g), nn_cases._fwd_bwd(tconv, tx, tgrad)))
    return cases


def norm_cases(torch, device, torch_device, quick=False):
    shape = (32, 64, 16, 16) if quick else BN_SHAPE
    cases, seen = [], set()
    for spec in nn_cases.REGISTRY.values():
        if spec.torch_make is None or spec.make_for_conv is None:
            continue
        ours = spec.make_for_conv(shape[1], shape[2])
        kind = type(ours).__name__
        theirs = None if kind in seen else nn_cases._torch_twin(torch, ours, shape)
        if theirs is None:
            continue
        seen.add(kind)
        ours.to(device), theirs.to(torch_device)
        x, tx = _pair(shape, torch, device, torch_device)
        g, tgrad = _pair(shape, torch, device, torch_device, 1, False)
        cases.append((f"{kind} {'x'.join(map(str, shape))} f+b",
                      nn_cases._fwd_bwd(ours, x, g), nn_cases._fwd_bwd(theirs, tx, tgrad)))
    return cases


def resnet_step_case(torch, device, torch_device, depth=20, batch=128):
    return nn_cases.resnet_step_cases(torch, depth, batch, device=device, torch_device=torch_device)


def peak_bandwidths(device):
    """(theoretical bytes/s or None, measured device-to-device copy bytes/s or None)."""
    if backend.as_device(device).type != "cuda":
        return None, None
    import cupy
    from tinygrad_bn.bench.timing import median_time
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
    theoretical = 2 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None  # DDR
    src = cupy.ones(256 * 2**20 // 4, dtype=cupy.float32)  # 256 MiB: far beyond the L2 cache
    dst = cupy.empty_like(src)
    sync = cupy.cuda.get_current_stream().synchronize
    seconds = median_time(lambda: cupy.copyto(dst, src), repeat=9, number=10, sync=sync)
    return theoretical, 2 * src.nbytes / seconds  # a copy reads and writes every byte


def device_description(device):
    if backend.as_device(device).type != "cuda":
        return {"device": str(device)}
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {"gpu": name, "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cupy.cuda.runtime.driverGetVersion()}


def run(record, torch, quick, device="cuda", torch_device="cuda"):
    """Times every GPU case through the bench's `record`; returns the extra bandwidth rows."""
    sync_ours, sync_theirs = _synchronizers(device, torch, torch_device)
    heavy = {"repeat": 3 if quick else 9, "paired": True}
    groups = [("conv", conv_cases(torch, device, torch_device, quick)),
              ("norm", norm_cases(torch, device, torch_device, quick))]
    if not quick:
        groups.append(("resnet", resnet_step_case(torch, device, torch_device)))
    times = {}
    for group, cases in groups:
        for name, ours, theirs in cases:
            row = record(group, name, _synced(ours, sync_ours), _synced(theirs, sync_theirs),
                         "torch CUDA eager", unit_scale=1e3, unit="ms", **heavy)
            if row is not None:
                times[name] = row
    bn = next((row for name, row in times.items() if name.startswith("BatchNorm2d")), None)
    if bn is None:
        return []
    shape = tuple(int(s) for s in bn["case"].split()[1].split("x"))
    bytes_moved = 5 * int(np.prod(shape)) * 4
    theoretical, copy = peak_bandwidths(device)
    out = []
    for who, seconds in (("ours", bn["ours_s"]), ("torch", bn["reference_s"])):
        achieved = bytes_moved / seconds
        out.append({"group": "bandwidth", "case": f"BatchNorm2d {bn['case'].split()[1]} f+b ({who})",
                    "bytes": bytes_moved, "achieved_bytes_per_s": achieved,
                    "theoretical_peak_bytes_per_s": theoretical, "copy_peak_bytes_per_s": copy,
                    "fraction_of_theoretical": achieved / theoretical if theoretical else None,
                    "fraction_of_copy": achieved / copy if copy else None})
        print(f"{'bandwidth':10s} BatchNorm2d f+b ({who}): {achieved / 1e9:8.1f} GB/s"
              + (f", {achieved / theoretical:5.1%} of the {theoretical / 1e9:.0f} GB/s peak" if theoretical else "")
              + (f", {achieved / copy:5.1%} of a {copy / 1e9:.0f} GB/s copy" if copy else ""), flush=True)
    return out
