"""The GPU bench cases run end to end on fakegpu against PyTorch's CPU (no timing is asserted):
a case that cannot even be built or run fails here, not on the rare GPU run."""
import json

import pytest

from tinygrad_bn import cuda
from tinygrad_bn.bench import gpu_cases
from tinygrad_bn.bench.__main__ import main
from tests.helpers import needs_torch, torch


def _call_each_once(rows):
    def record(group, name, ours, ref, ref_name, **timing):
        ours(), ref()  # every case runs once on each side
        row = {"group": group, "case": name, "ours_s": 2e-3, "reference_s": 1e-3}
        rows.append(row)
        return row
    return record


@needs_torch
def test_every_gpu_case_runs_on_fakegpu_and_bn_bandwidth_counts_five_passes():
    rows = []
    extra = gpu_cases.run(_call_each_once(rows), torch, quick=True, device="fakegpu", torch_device="cpu")
    groups = {row["group"] for row in rows}
    assert groups == {"conv", "norm"}
    assert any(row["case"].startswith("BatchNorm2d") for row in rows)
    ours, theirs = extra
    numel = 32 * 64 * 16 * 16
    assert ours["bytes"] == 5 * numel * 4
    assert ours["achieved_bytes_per_s"] == pytest.approx(5 * numel * 4 / 2e-3)
    assert theirs["achieved_bytes_per_s"] == pytest.approx(2 * ours["achieved_bytes_per_s"])
    assert ours["fraction_of_copy"] is None  # no GPU: no peak to compare with


@needs_torch
def test_the_resnet_step_case_trains_on_fakegpu():
    ((name, ours, theirs),) = gpu_cases.resnet_step_case(torch, "fakegpu", "cpu", depth=8, batch=4)
    assert name == "ResNet-8 train step b4"
    ours(), theirs()


@pytest.mark.skipif(cuda.is_available(), reason="checks the message given without a GPU")
def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["--device", "cuda", "--quick", "--json", str(tmp_path / "b.json")])
    assert "CuPy with a CUDA GPU is needed" in str(stop.value)
    assert not (tmp_path / "b.json").exists()


@needs_torch
def test_the_cpu_json_describes_the_device(tmp_path):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        main(["--quick", "--filter", "LayerNorm", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["device_description"] == {"device": "cpu"}
