"""The benchmark command runs and writes its JSON (a smoke test: no timing is asserted)."""
import json

import pytest

from tinygrad_bn.bench.__main__ import main

torch = pytest.importorskip("torch", reason="the side-by-side cases need PyTorch (the 'oracle' extra)")


def test_quick_filtered_run_writes_ratios_and_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")          # restored after the test
    torch_threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    try:
        main(["--quick", "--filter", "GroupNorm", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(torch_threads)
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["machine"]["normalizer_kernel_threads"] == 1
    (case,) = result["cases"]
    assert case["case"].startswith("GroupNorm") and case["ratio"] > 0
    assert case["ours_s"] > 0 and case["reference_s"] > 0
