"""The example scripts end to end, with tiny settings: every promised artifact of
`python -m examples.resnet`, --resume continuing identically, one-line errors for bad options,
and short runs of examples.train and examples.draw_graph."""
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

import tinygrad_bn as tg
from tinygrad_bn import backend

from examples import draw_graph as draw_script
from examples import models
from examples import resnet as resnet_script
from examples import train as train_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--depth", "8", "--train-size", "48", "--test-size", "20", "--image-size", "8",
        "--batch-size", "16", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMING = {"epoch_time_s", "step_time_ms", "images_per_s"}
# without the Python package graphviz the run skips its graphs (with a note)
HAVE_GRAPHVIZ = importlib.util.find_spec("graphviz") is not None


def run_main(main, argv, capsys):
    """main(argv) in this process; returns (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """One tiny 2-epoch comparison run, shared by the artifact and resume tests."""
    out = tmp_path_factory.mktemp("resnet") / "straight"
    resnet_script.main(TINY + ["--epochs", "2", "--out", str(out)])
    return out


def read_rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ---- every artifact ---------------------------------------------------------------------------


def test_resnet_writes_every_artifact(two_epochs):
    out = two_epochs
    with open(out / "metrics.csv") as f:
        header = f.readline().strip().split(",")
    assert header[:7] == ["epoch", "variant", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert {"step_time_ms", "images_per_s"} <= set(header)
    rows = read_rows(out)
    assert [(r["epoch"], r["variant"]) for r in rows] == [("1", "post"), ("1", "pre"),
                                                          ("2", "post"), ("2", "pre")]
    for r in rows:
        assert 0 <= float(r["test_acc"]) <= 1 and float(r["train_loss"]) > 0

    doc = json.loads((out / "metrics.json").read_text())
    assert {"config", "final", "epochs", "step_losses", "params", "graphs"} <= set(doc)
    assert set(doc["final"]) == {"post", "pre"}
    for name, final in doc["final"].items():
        assert {"params", "test_acc", "test_loss", "train_acc", "train_loss", "step_time_ms"} <= set(final)
        assert final["params"] == models.resnet_param_count(8, name)
        assert len(doc["step_losses"][name]) == 2 * 3  # 48 images // 16 = 3 steps per epoch
    assert doc["config"]["depth"] == 8

    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "checkpoint.npz").stat().st_size > 0
    if not HAVE_GRAPHVIZ:
        assert doc["graphs"] == []
        return
    graphs = out / "graphs"
    for block in ("post", "pre"):
        for direction in ("backward", "forward"):
            text = (graphs / f"block-{block}-{direction}.dot").read_text()
            assert text.startswith("digraph") and "Add" in text and "layer1.0.conv1.weight" in text
            if shutil.which("dot"):
                svg = graphs / f"block-{block}-{direction}.svg"
                assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    if shutil.which("dot"):
        for direction in ("backward", "forward"):
            assert (graphs / f"blocks-{direction}.png").read_bytes()[:8] == PNG_MAGIC
    assert all((out / p).exists() for p in doc["graphs"])


def test_resnet_prints_the_final_table(tmp_path, capsys):
    code, out, err = run_main(resnet_script.main,
                              TINY + ["--epochs", "1", "--no-graphs", "--out", str(tmp_path)], capsys)
    assert code == 0
    table = out[out.index("variant"):]
    assert "post-activation" in table and "pre-activation" in table
    assert "ms/step" in table and f"{models.resnet_param_count(8, 'post'):,}" in table


def test_block_graphs_without_dot_write_dot_files_and_one_hint(tmp_path, capsys, monkeypatch):
    pytest.importorskip("graphviz")
    import tinygrad_bn.viz.render as render
    monkeypatch.setattr(render, "find_dot", lambda: None)
    monkeypatch.setattr(render, "find_graphviz_pure", lambda: None)
    tg.manual_seed(0)
    variants = {b: (models.ResNet(8, b, image_size=8), None, None) for b in ("post", "pre")}
    written = resnet_script.write_block_graphs(variants, str(tmp_path), "cpu")
    out = capsys.readouterr().out
    assert sorted(os.path.basename(p) for p in written) == sorted(
        f"block-{b}-{d}.dot" for b in ("post", "pre") for d in ("backward", "forward"))
    assert len(out.strip().splitlines()) == 1 and "dot" in out


@pytest.mark.parametrize("norm", models.conv_norm_names())
def test_block_graphs_for_every_conv_normalizer(norm):
    pytest.importorskip("graphviz")
    tg.manual_seed(0)
    for block in ("post", "pre"):
        net = models.ResNet(14, block, norm=norm, image_size=8)
        graphs = resnet_script.block_graphs(net, block, "cpu")
        assert set(graphs) == {"backward", "forward"}
        assert "layer1.1.conv2.weight" in graphs["backward"].source


# ---- resume ------------------------------------------------------------------------------------


def test_resume_after_interruption_continues_identically(two_epochs, tmp_path, capsys):
    out = tmp_path / "interrupted"
    code, _, _ = run_main(resnet_script.main,
                          TINY + ["--epochs", "2", "--stop-after", "1", "--no-graphs", "--out", str(out)],
                          capsys)
    assert code == 0
    assert len(read_rows(out)) == 2  # one epoch of both variants so far
    code, stdout, _ = run_main(resnet_script.main,
                               TINY + ["--epochs", "2", "--resume", "--no-graphs", "--out", str(out)],
                               capsys)
    assert code == 0 and "resuming" in stdout
    straight, resumed = read_rows(two_epochs), read_rows(out)
    assert len(resumed) == 4
    for a, b in zip(straight, resumed):
        assert {k: v for k, v in a.items() if k not in TIMING} == \
               {k: v for k, v in b.items() if k not in TIMING}
    s1 = json.loads((two_epochs / "metrics.json").read_text())["step_losses"]
    s2 = json.loads((out / "metrics.json").read_text())["step_losses"]
    assert s1 == s2
    c1, c2 = tg.load(two_epochs / "checkpoint.npz"), tg.load(out / "checkpoint.npz")
    for block in ("post", "pre"):
        m1, m2 = c1["variants"][block]["model"], c2["variants"][block]["model"]
        assert list(m1) == list(m2)
        for key in m1:
            assert (m1[key].numpy() == m2[key].numpy()).all(), (block, key)


def test_resume_refuses_other_options(two_epochs, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(two_epochs, out)
    code, _, err = run_main(resnet_script.main,
                            TINY[:1] + ["14"] + TINY[2:] + ["--epochs", "2", "--resume", "--out", str(out)],
                            capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--depth" in err and "--resume" in err



def test_a_finished_run_is_not_overwritten_without_resume_or_overwrite(two_epochs, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(two_epochs, out)
    before = {name: (out / name).read_bytes() for name in ("checkpoint.npz", "metrics.csv", "curves.png")}
    code, _, err = run_main(resnet_script.main, TINY + ["--epochs", "1", "--no-graphs", "--out", str(out)],
                            capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--out" in err and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert all((out / name).read_bytes() == data for name, data in before.items())
    code, _, err = run_main(resnet_script.main,
                            TINY + ["--epochs", "1", "--resume", "--overwrite", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err and "cannot be combined with --resume" in err


def test_overwrite_starts_afresh_and_removes_the_old_results(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(train_script.main, TINY + ["--model", "small-cnn", "--epochs", "2",
                                                       "--out", str(out)], capsys)
    assert code == 0, err
    (out / "curves.png").write_bytes(b"old curves")
    code, _, err = run_main(train_script.main, TINY + ["--model", "small-cnn", "--epochs", "1",
                                                       "--overwrite", "--out", str(out)], capsys)
    assert code == 0, err
    assert len(read_rows(out)) == 1 and (out / "curves.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("case", ["npz_deflated_3gib", "npz_header_50gb", "manifest_1e400",
                                  "manifest_deep", "manifest_str_tensor"])
def test_resume_from_a_hostile_checkpoint_is_one_line(two_epochs, tmp_path, capsys, case):
    from tests.data.hostile.build import CASES
    out = tmp_path / "copy"
    shutil.copytree(two_epochs, out)
    hostile = CASES[case][3](str(tmp_path / "hostile"))
    shutil.copy(hostile, out / "checkpoint.npz")
    code, _, err = run_main(resnet_script.main,
                            TINY + ["--epochs", "2", "--resume", "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--resume" in err and "checkpoint.npz" in err and "Traceback" not in err



@pytest.mark.parametrize("size, expected", [
    ("1000000", "--image-size: must be in 8..1024, got 1000000"),
    ("4", "--image-size: must be in 8..1024, got 4"),
])
def test_image_size_out_of_range_is_one_line(tmp_path, capsys, size, expected):
    code, _, err = run_main(train_script.main, ["--image-size", size, "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err


def test_image_size_that_cannot_fit_in_memory_is_one_line(tmp_path, capsys):
    code, _, err = run_main(train_script.main, ["--image-size", "1024", "--train-size", "1000000",
                                                "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--image-size: 1024 with --train-size 1000000" in err and "GiB" in err



def test_a_hostile_dataset_file_is_one_line(tmp_path, capsys):
    from tests.data.hostile.build import cifar_ndarray_call
    root = cifar_ndarray_call(str(tmp_path / "cifar"))
    code, _, err = run_main(train_script.main, ["--dataset", "cifar10", "--data-dir", root,
                                                "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--data-dir" in err and "refusing to call numpy.ndarray" in err


# ---- one-line errors ---------------------------------------------------------------------------


def _bad_inputs(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["--norm", "NoSuchNorm"], "--norm"),
        (["--depth", "21"], "--depth"),
        (["--depth", "twenty"], "--depth"),
        (["--dataset", "cifar10"], "--data-dir"),
        (["--dataset", "mnist", "--data-dir", str(tmp_path / "missing")], "--data-dir"),
        (["--dataset", "cifar10", "--data-dir", str(tmp_path)], "--data-dir"),  # no batch files
        (["--out", str(a_file / "sub")], "--out"),
        (["--resume", "--out", str(tmp_path / "never-ran")], "--resume"),
        (["--epochs", "0"], "--epochs"),
        (["--image-size", "4"], "--image-size"),
    ]
    if not backend.cuda_is_available():
        cases.append((["--device", "cuda"], "--device"))
    return cases


def test_bad_inputs_get_one_line_naming_the_option(tmp_path, capsys):
    for argv, option in _bad_inputs(tmp_path):
        code, out, err = run_main(resnet_script.main, argv + ["--out", str(tmp_path / "o")]
                                  if "--out" not in argv else argv, capsys)
        lines = err.strip().splitlines()
        assert code != 0, argv
        assert len(lines) == 1, (argv, err)
        assert option in lines[0] and "Traceback" not in err, (argv, err)
    code, _, err = run_main(resnet_script.main, ["--norm", "NoSuchNorm"], capsys)
    for name in models.conv_norm_names():
        assert name in err  # the valid names are listed


@pytest.mark.parametrize("argv,option", [(["--norm", "Nope"], "--norm"), (["--depth", "19"], "--depth")])
def test_bad_input_from_the_command_line(argv, option, tmp_path):
    """The real CLI: exit status 2, one line on stderr, no traceback."""
    result = subprocess.run([sys.executable, "-m", "examples.resnet", *argv, "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in result.stderr


def test_help_explains_every_option(capsys):
    code, out, _ = run_main(resnet_script.main, ["--help"], capsys)
    assert code == 0
    for option in ("--depth", "--norm", "--epochs", "--batch-size", "--lr", "--device", "--dataset",
                   "--data-dir", "--seed", "--out", "--train-size", "--test-size", "--image-size",
                   "--resume"):
        assert option in out
    assert "BatchNorm2d" in out and "6n+2" in out


def test_train_and_draw_graph_errors_are_one_line(tmp_path, capsys):
    for main, argv, option in (
            (train_script.main, ["--optimizer", "lbfgs"], "--optimizer"),
            (train_script.main, ["--model", "resnet", "--depth", "10"], "--depth"),
            (train_script.main, ["--schedule", "multistep", "--milestones", "a,b"], "--milestones"),
            (draw_script.main, ["--what", "block", "--unit", "layer9.0"], "--unit"),
            (draw_script.main, ["--out", str(tmp_path / "g.jpgx")], "--out"),
            (draw_script.main, ["--norm", "Nope"], "--norm")):
        if main is train_script.main:
            argv = argv + ["--out", str(tmp_path / "o")]
        code, _, err = run_main(main, argv, capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1 and option in err, (argv, err)


# ---- the other scripts -----------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    ["--model", "small-cnn", "--optimizer", "adam", "--schedule", "step"],
    ["--model", "resnet", "--block", "post", "--norm", "GroupNorm", "--optimizer", "adamw",
     "--schedule", "multistep", "--warmup-epochs", "0.5"],
    ["--model", "small-cnn", "--no-wd-norm-bias", "--weight-decay", "0.01"],
])
def test_train_runs(tmp_path, capsys, extra):
    code, out, err = run_main(train_script.main,
                              TINY + ["--epochs", "2", "--out", str(tmp_path)] + extra, capsys)
    assert code == 0, err
    rows = read_rows(tmp_path)
    assert len(rows) == 2 and (tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert "test acc" in out


def test_train_on_fakegpu(tmp_path, capsys):
    code, _, err = run_main(train_script.main, TINY + ["--model", "small-cnn", "--epochs", "1",
                                                       "--device", "fakegpu", "--out", str(tmp_path)],
                            capsys)
    assert code == 0, err
    assert tg.load(tmp_path / "checkpoint.npz")["variants"]["small-cnn"]["model"]["fc.weight"].device \
        == "fakegpu"


@pytest.mark.parametrize("argv", [
    ["--depth", "8", "--fold", "--max-depth", "2"],
    ["--depth", "8", "--what", "block", "--unit", "layer2.0", "--direction", "forward"],
    ["--model", "small-cnn", "--output", "logits", "--image-size", "8"],
])
def test_draw_graph_writes_a_file(tmp_path, capsys, argv):
    pytest.importorskip("graphviz")
    target = tmp_path / "graph.dot"
    code, out, err = run_main(draw_script.main, argv + ["--out", str(target)], capsys)
    assert code == 0, err
    text = target.read_text()
    assert text.startswith("digraph")
    assert ("#1" in text) if "forward" in argv else ("Backward" in text)
    if "--unit" in argv:
        assert "layer2.0.shortcut" in text
