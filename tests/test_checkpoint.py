"""Checkpoints: nested round-trips on every device, map_location, resuming optimizer + scheduler +
loader + RNG state, atomic writes under SIGKILL, and refusal of anything pickled (marker files)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import backend
from tinygrad_bn.checkpoint import CheckpointError, load, save
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.optim import SGD, lr_scheduler
from tests.helpers import needs_torch, torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _host(t):
    return backend.to_numpy(t.data)


def test_nested_round_trip(tmp_path, device):
    obj = {
        "model": {"w": tg.randn(3, 4, device=device), "b": tg.zeros(4, dtype=tg.float64, device=device),
                  "steps": tg.tensor([1, 2, 3], dtype=tg.int64, device=device),
                  "mask": tg.tensor([True, False], device=device),
                  "half": tg.ones(2, dtype=tg.float16, device=device),
                  "p": Parameter(tg.ones(2, device=device))},
        "optimizer": {"state": {0: {"step": 3, "exp_avg": tg.ones(2, device=device)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
        "arrays": [np.arange(6, dtype=np.int32).reshape(2, 3), np.zeros((0, 2)), np.array(2.5)],
        "scalars": (np.float32(1.5), np.int64(7), np.bool_(True)),
        "numbers": [1, -2.5, float("inf"), 10 ** 30, True, None, "text", ""],
        "nan": float("nan"),
        "epoch": 4,
        "rng": backend.get_rng_state(),
        "raw_device_array": tg.ones(3, device=device).data,
    }
    path = tmp_path / "ck.npz"
    save(obj, path)
    back = load(path)
    assert set(back) == set(obj)
    for name, t in obj["model"].items():
        got = back["model"][name]
        assert isinstance(got, tg.Tensor) and got.device == device and got.dtype == t.dtype, name
        np.testing.assert_array_equal(_host(got), _host(t))
    assert back["model"]["p"].requires_grad and not back["model"]["w"].requires_grad
    assert back["optimizer"]["state"][0]["step"] == 3  # int keys stay ints
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    for a, b in zip(back["arrays"], obj["arrays"]):
        assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert [type(s) for s in back["scalars"]] == [np.float32, np.int64, np.bool_]
    assert back["scalars"] == obj["scalars"]
    assert back["numbers"] == obj["numbers"] and type(back["numbers"][4]) is bool
    assert np.isnan(back["nan"]) and back["epoch"] == 4 and back["rng"] == obj["rng"]
    assert backend.device_of(back["raw_device_array"]) == device


def test_map_location(tmp_path):
    save({"t": tg.ones(2, device="fakegpu")}, tmp_path / "ck")
    assert load(tmp_path / "ck")["t"].device == "fakegpu"
    assert load(tmp_path / "ck", map_location="cpu")["t"].device == "cpu"


def test_unsupported_objects_are_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"cannot save set at obj\['a'\]\[1\]"):
        save({"a": [1, {2}]}, tmp_path / "ck")
    with pytest.raises(TypeError, match="object arrays would need pickle"):
        save([np.array([{}, 1], dtype=object)], tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    assert os.listdir(tmp_path) == []  # no temp file left behind


def test_resume_training_identically(tmp_path):
    """Optimizer + scheduler + RNG state through a file: the resumed run equals the uninterrupted one."""
    def make(w):
        opt = SGD([w], lr=0.1, momentum=0.9)
        return opt, lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train(w, opt, sched, steps):
        for _ in range(steps):
            opt.zero_grad()
            noise = tg.randn(3)  # the global generator is part of the state
            ((w - noise) ** 2).sum().backward()
            opt.step()
            sched.step()

    tg.manual_seed(0)
    w = Parameter(tg.ones(3))
    opt, sched = make(w)
    train(w, opt, sched, 3)
    save({"w": w, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
          "rng": backend.get_rng_state()}, tmp_path / "ck")
    train(w, opt, sched, 4)

    ck = load(tmp_path / "ck")
    w2 = Parameter(ck["w"])
    opt2, sched2 = make(w2)
    opt2.load_state_dict(ck["optimizer"])
    sched2.load_state_dict(ck["scheduler"])
    backend.set_rng_state(ck["rng"])
    train(w2, opt2, sched2, 4)
    np.testing.assert_array_equal(w2.detach().numpy(), w.detach().numpy())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# ---- atomic writes: kill a real process mid-save ----------------------------------------------
CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from tinygrad_bn import checkpoint
    path, mode = sys.argv[1], sys.argv[2]

    def state(epoch):  # every array holds the epoch: a mixed or partial file would show
        return {"epoch": epoch, "w": np.full((2_000_000,), epoch, np.float32),
                "b": np.full((1000,), epoch, np.float64)}

    checkpoint.save(state(1), path)
    print("SAVED 1", flush=True)
    if mode == "before-rename":
        def stall(*args):  # the temp file is complete but not yet renamed: die here
            print("RENAMING", flush=True)
            time.sleep(60)
        checkpoint.os.replace = stall
        checkpoint.save(state(2), path)
    else:
        for epoch in range(2, 1000):
            print("SAVING", epoch, flush=True)
            checkpoint.save(state(epoch), path)
""")


def _run_and_kill(tmp_path, mode, wait_for, delay):
    path = tmp_path / "ck.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen([sys.executable, str(script), str(path), mode], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        for line in child.stdout:
            if line.startswith(wait_for):
                break
        else:
            pytest.fail(f"child exited before printing {wait_for!r}")
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return path


def _assert_consistent(path):
    ck = load(path)
    epoch = ck["epoch"]
    assert np.all(ck["w"] == epoch) and np.all(ck["b"] == epoch) and ck["w"].size == 2_000_000
    return epoch


def test_killed_between_write_and_rename_keeps_previous(tmp_path):
    path = _run_and_kill(tmp_path, "before-rename", "RENAMING", 0.0)
    assert _assert_consistent(path) == 1
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert leftovers and all(n.startswith(".ck.npz.") for n in leftovers)  # never the checkpoint's name


def test_killed_at_a_random_point_mid_save_keeps_a_complete_checkpoint(tmp_path):
    path = _run_and_kill(tmp_path, "loop", "SAVING 3", 0.01)
    assert _assert_consistent(path) in (1, 2, 3)


# ---- refusing pickles: nothing may run ----------------------------------------------------------
class _RunsCode:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payload(marker):
    return _RunsCode(os.system, f"touch {marker}")


def test_raw_pickle_is_refused_without_running(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "ck.npz"
    path.write_bytes(pickle.dumps({"w": _payload(marker)}))
    with pytest.raises(CheckpointError, match="is a pickle") as info:
        load(path)
    assert str(path) in str(info.value) and not marker.exists()


def test_npz_with_an_object_array_is_refused_without_running(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "ck.npz"
    manifest = json.dumps({"format": "tinygrad_bn.checkpoint", "version": 1,
                           "tree": {"t": "array", "key": "a0"}}).encode()
    np.savez(path, a0=np.array([_payload(marker), 1], dtype=object),
             __manifest__=np.frombuffer(manifest, np.uint8))
    with pytest.raises(CheckpointError, match="pickled objects"):
        load(path)
    assert not marker.exists()


@needs_torch
def test_torch_pt_file_is_refused_without_running(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"w": torch.ones(2), "evil": _payload(marker)}, path)
    with pytest.raises(CheckpointError, match="PyTorch .pt file"):
        load(path)
    assert not marker.exists()


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "ck.npz"
    manifest = json.dumps({"format": "tinygrad_bn.checkpoint", "version": 2, "tree": {"t": "none"}})
    np.savez(path, __manifest__=np.frombuffer(manifest.encode(), np.uint8))
    with pytest.raises(CheckpointError, match="format version 2.*reads versions 1..1"):
        load(path)


def test_corrupt_manifest_is_refused(tmp_path):
    path = tmp_path / "ck.npz"
    bad_key = {"t": "dict", "items": [[{"t": "list", "items": []}, {"t": "none"}]]}  # unhashable
    for tree, message in [(bad_key, "corrupt manifest"), ({"t": "tensor", "key": "a9"}, "missing array"),
                          ({"t": "mystery"}, "unknown node")]:
        manifest = json.dumps({"format": "tinygrad_bn.checkpoint", "version": 1, "tree": tree})
        np.savez(path, __manifest__=np.frombuffer(manifest.encode(), np.uint8))
        with pytest.raises(CheckpointError, match=message):
            load(path)


def test_not_a_checkpoint_truncated_and_missing(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="no __manifest__ entry"):
        load(plain)
    good = tmp_path / "good.npz"
    save({"w": np.ones(1000)}, good)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load(cut)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a tinygrad_bn checkpoint"):
        load(text)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_nesting_is_bounded_on_save_and_load(tmp_path):
    from tinygrad_bn.checkpoint import MAX_DEPTH
    deep = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} levels deep"):
        save(deep, tmp_path / "deep.npz")
    ok = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    save(ok, tmp_path / "ok.npz")
    assert load(tmp_path / "ok.npz") == ok


def test_manifest_values_of_the_wrong_type_name_the_field(tmp_path):
    import json
    import zipfile
    save({"lr": 0.1, "name": "run"}, tmp_path / "c.npz")
    with zipfile.ZipFile(tmp_path / "c.npz") as z:
        manifest = np.load(z.open("__manifest__.npy")).tobytes().decode()
    tree = json.loads(manifest)
    tree["tree"]["items"][1][1] = {"t": "str", "v": 7}
    np.savez(tmp_path / "bad.npz", __manifest__=np.frombuffer(json.dumps(tree).encode(), np.uint8))
    with pytest.raises(CheckpointError, match=r"field tree.items\[1\]\[1\] is a 'str' node whose value "
                                              r"is 7 \(int\)"):
        load(tmp_path / "bad.npz")


def test_string_arrays_still_round_trip(tmp_path):
    save({"names": np.array(["a", "bc"]), "raw": np.array([b"x"])}, tmp_path / "s.npz")
    back = load(tmp_path / "s.npz")
    assert back["names"].tolist() == ["a", "bc"] and back["raw"].tolist() == [b"x"]
