"""Every registered experiment (examples/experiments/<name>.py, found by scanning the package)
runs with --quick --seeds 0 and writes what docs/../experiments-spec promises: metrics.json with
every key, a valid PNG, a verdict that is one of three words; --resume skips finished runs.
Each experiment's own invariants are in tests/examples/experiments/test_<name>.py."""
import json
import sys
import types

import pytest

from examples import experiments
from examples.experiments import _runner as R

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPERIMENTS = experiments.names()


def check_outputs(out, name):
    doc = json.loads((out / "metrics.json").read_text())
    assert set(R.METRICS_KEYS) <= set(doc), set(R.METRICS_KEYS) - set(doc)
    assert doc["verdict"] in R.VERDICTS
    assert isinstance(doc["claim"], str) and doc["claim"] and doc["rule"] and doc["source"]
    prov = doc["provenance"]
    assert {"git_commit", "git_dirty", "machine", "threads", "numpy", "tinygrad_bn"} <= set(prov)
    assert doc["runs"] and all({"config_name", "seed", "result"} <= set(r) for r in doc["runs"])
    assert set(doc["summary"]) == set(doc["config"]["configurations"])
    png = out / f"{name}.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image
    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return doc


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_run_writes_every_output(name, tmp_path, capsys):
    module = __import__(f"examples.experiments.{name}", fromlist=["main"])
    for attr in ("NAME", "CLAIM", "SOURCE", "RULE", "BUDGET", "configs", "run", "verdict", "plot", "main"):
        assert hasattr(module, attr), f"{name} lacks {attr}"
    assert module.NAME == name and set(module.BUDGET) == {"quick", "default", "full"}
    assert module.RULE.strip() in (module.__doc__ or ""), "the verdict rule must be in the docstring"
    out = tmp_path / name
    module.main(["--quick", "--seeds", "0", "--no-progress", "--out", str(out)])
    doc = check_outputs(out, name)
    assert doc["verdict"] == "inconclusive"  # one seed: no spread, never a success
    assert doc["scale"] == "quick" and doc["config"]["seeds"] == [0]
    table = capsys.readouterr().out
    assert "verdict:" in table and all(c in table for c in doc["summary"])


# ---- the runner itself, on a tiny stand-in experiment -------------------------------------------
def tiny_experiment(calls):
    exp = types.ModuleType("tiny")
    exp.__doc__ = "A stand-in. Rule: reproduced when a > b beyond the spread."
    exp.NAME, exp.CLAIM, exp.SOURCE = "tiny", "a exceeds b", "the tests"
    exp.RULE = "reproduced when a > b beyond the spread."
    exp.BUDGET = {"quick": "1 s", "default": "1 s", "full": "1 s"}
    exp.configs = lambda scale: {"a": {"offset": 1.0}, "b": {"offset": 0.0}}

    def run(config, seed, ctx):
        calls.append((config["offset"], seed))
        import tinygrad_bn as tg
        noise = float(tg.randn(1).item()) * 0.01
        return {"value": config["offset"] + noise, "curve": [config["offset"], noise]}

    def verdict(results):
        side = R.separated(R.column(results, "a", "value"), R.column(results, "b", "value"))
        return ("reproduced", "a > b") if side == "greater" else ("inconclusive", side)

    def plot(results, summary):
        fig, axes = R.figure(1, exp.CLAIM)
        for name, runs in results.items():
            R.band(axes[0], [0, 1], [r["curve"] for r in runs], name)
        return R.finish(fig, axes)

    exp.run, exp.verdict, exp.plot = run, verdict, plot
    return exp


def test_runner_outputs_seeds_and_verdict(tmp_path, capsys):
    calls = []
    exp = tiny_experiment(calls)
    doc = R.main(exp, ["--seeds", "0,1,2", "--no-progress", "--out", str(tmp_path)])
    check_outputs(tmp_path, "tiny")
    assert doc["verdict"] == "reproduced"
    assert len(calls) == 6 and [r["seed"] for r in doc["runs"]] == [0, 1, 2, 0, 1, 2]
    assert doc["summary"]["a"]["value"]["n"] == 3 and doc["summary"]["a"]["value"]["std"] > 0
    # the same seed gives the same run: seeding happens before every run
    values = {(r["config_name"], r["seed"]): r["result"]["value"] for r in doc["runs"]}
    again = R.main(exp, ["--seeds", "1", "--no-progress", "--out", str(tmp_path / "again")])
    assert again["runs"][0]["result"]["value"] == values[("a", 1)]
    assert again["verdict"] == "inconclusive"  # one seed is never enough


def test_provenance_is_taken_when_the_run_starts(tmp_path, capsys, monkeypatch):
    # a file edited (or a commit made) while the run goes on must not pass for the code that ran
    states = iter([{"git_commit": "aaa", "git_modified": []}, {"git_commit": "bbb", "git_modified": ["x.py"]}])
    monkeypatch.setattr(R.C, "provenance", lambda: dict(next(states), numpy="n", tinygrad_bn="t"))
    doc = R.main(tiny_experiment([]), ["--seeds", "0", "--no-progress", "--out", str(tmp_path)])
    prov = doc["provenance"]
    assert prov["git_commit"] == "aaa" and prov["git_dirty"] is False
    assert prov["at_end"] == {"git_commit": "bbb", "git_modified": ["x.py"]}
    states = iter([{"git_commit": "aaa", "git_modified": []}] * 2)
    assert "at_end" not in R.main(tiny_experiment([]), ["--seeds", "0", "--no-progress", "--out",
                                                        str(tmp_path / "same")])["provenance"]


def test_resume_skips_finished_runs(tmp_path, capsys):
    calls = []
    exp = tiny_experiment(calls)
    first = R.main(exp, ["--seeds", "0,1", "--no-progress", "--out", str(tmp_path)])
    assert len(calls) == 4
    (tmp_path / "runs" / "b__seed1.json").unlink()  # as if interrupted before the last run
    calls.clear()
    second = R.main(exp, ["--seeds", "0,1", "--no-progress", "--out", str(tmp_path), "--resume"])
    assert calls == [(0.0, 1)] and second["skipped_runs"] == 3
    assert [r["result"] for r in second["runs"]] == [r["result"] for r in first["runs"]]
    assert "3 of 4 runs were already finished" in capsys.readouterr().out
    # a changed configuration is not a finished run
    calls.clear()
    exp.configs = lambda scale: {"a": {"offset": 2.0}, "b": {"offset": 0.0}}
    R.main(exp, ["--seeds", "0,1", "--no-progress", "--out", str(tmp_path), "--resume"])
    assert calls == [(2.0, 0), (2.0, 1)]
    # without --resume a finished experiment is refused, in one line; --overwrite does every run again
    calls.clear()
    with pytest.raises(SystemExit) as e:
        R.main(exp, ["--seeds", "0,1", "--no-progress", "--out", str(tmp_path)])
    assert e.value.code == 2 and calls == []
    err = capsys.readouterr().err
    assert "already holds a finished experiment (metrics.json)" in err and "--overwrite" in err
    assert err.count("\n") == 1
    R.main(exp, ["--seeds", "0,1", "--no-progress", "--out", str(tmp_path), "--overwrite"])
    assert len(calls) == 4
    with pytest.raises(SystemExit):
        R.main(exp, ["--no-progress", "--out", str(tmp_path), "--overwrite", "--resume"])


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    exp = tiny_experiment([])
    for argv in (["--seeds", "a"], ["--seeds", "1,1"], ["--quick", "--full"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as e:
            R.main(exp, argv + ["--out", str(tmp_path)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err


def test_separated_needs_a_gap_beyond_the_spread():
    assert R.separated([1.0, 1.1, 0.9], [0.0, 0.1, -0.1]) == "greater"
    assert R.separated([0.0, 0.1, -0.1], [1.0, 1.1, 0.9]) == "less"
    assert R.separated([1.0, 2.0, 0.0], [0.5, 0.6, 0.4]) == "overlap"


def test_listing_names_every_experiment(capsys):
    from examples.experiments.__main__ import main
    listed = main([])
    out = capsys.readouterr().out
    assert [m.NAME for m in listed] == EXPERIMENTS
    for name in EXPERIMENTS:
        assert name in out


def test_dataset_options_digits_and_missing_mnist(tmp_path, capsys):
    import argparse
    args = argparse.Namespace(dataset="digits", data_dir=None)
    train, test = R.dataset_loaders(args, seed=0, batch_size=64)
    x, y = next(iter(train))
    assert x.shape == (64, 1, 8, 8) and abs(float(train.dataset.data.mean())) < 1  # raw [0, 1] data
    assert len(train) == 1438 // 64 and len(test.dataset) == 359
    assert abs(float(x.data.mean())) < 0.5  # the loader standardizes
    for bad in (argparse.Namespace(dataset="mnist", data_dir=None),
                argparse.Namespace(dataset="mnist", data_dir=str(tmp_path))):
        with pytest.raises(SystemExit) as e:
            R.dataset_loaders(bad, seed=0, batch_size=64)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--data-dir" in err
