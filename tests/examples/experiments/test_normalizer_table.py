"""normalizer_table's invariants: the table is read from the registry (a new normalizer joins it
with no code change); the memory count is of what the graph saves; the eval batch-dependence
probe tells BN with running statistics from BN with batch statistics; the verdict follows its
rule; the table is sorted by the accuracy at the smallest batch and goes between its markers."""
import numpy as np

import tinygrad_bn as tg
from tinygrad_bn import nn
from tinygrad_bn.norms import REGISTRY, NormSpec
from examples.experiments import normalizer_table as E
from examples.models import conv_norm_names


def test_every_conv_normalizer_of_the_registry_at_every_batch_size():
    names = E.configs("quick")
    sizes = E.SCALES["quick"]["batch_sizes"]
    assert set(names) == {E.config_name(n, b) for n in conv_norm_names() for b in sizes}
    assert "BatchNorm2d b2" in names and names["BatchNorm2d b64"]["lr"] == E.BASE_LR


def test_a_new_normalizer_joins_the_table_with_no_code_change(monkeypatch):
    spec = NormSpec(name="StudentNorm2d", make=lambda c: nn.BatchNorm2d(c), input_shape=lambda c: (2, c, 2, 2),
                    make_for_conv=lambda c, hw: nn.BatchNorm2d(c), torch_make=lambda torch, c: None)
    monkeypatch.setitem(REGISTRY, "StudentNorm2d", spec)
    assert {"StudentNorm2d b2", "StudentNorm2d b8", "StudentNorm2d b64"} <= set(E.configs("quick"))


def test_saved_for_backward_counts_the_input_and_the_statistics_once():
    x = tg.tensor(np.random.default_rng(0).standard_normal((8, 4, 5, 5)).astype(np.float32), requires_grad=True)
    saved = E.saved_for_backward(nn.BatchNorm2d(4), x)
    assert x.data.nbytes <= saved <= x.data.nbytes + 64 * 4    # x, plus a few numbers per channel
    with tg.no_grad():
        assert E.saved_for_backward(nn.BatchNorm2d(4), x) == 0  # no graph, nothing kept
    relu_twice = nn.Sequential(nn.ReLU(), nn.ReLU())
    assert E.saved_for_backward(relu_twice, x) > 0


def test_eval_batch_dependence_tells_running_from_batch_statistics():
    x = tg.tensor(np.random.default_rng(1).standard_normal((8, 3, 4, 4)).astype(np.float32))
    tracked = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten())
    tracked(x)  # one training step: running statistics that are not the identity
    assert E.eval_batch_dependence(tracked, x) < 1e-6
    batch_stats = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False), nn.Flatten())
    assert E.eval_batch_dependence(batch_stats, x) > 1e-2
    assert tracked.training and batch_stats.training  # the probe leaves the mode as it was


def fake_results(acc):
    """acc: {(norm, batch): mean accuracy} -> results with three seeds spread by 0.001."""
    return {E.config_name(n, b): [{"test_acc": a + 0.001 * s, "time_ratio_vs_bn": 1.0, "params": 10,
                                   "eval_batch_dependent": False, "registry_batch_independent_eval": True,
                                   "saved_x_input": 1.0} for s in range(3)]
            for (n, b), a in acc.items()}


def test_verdict_follows_the_rule():
    good = fake_results({("BatchNorm2d", 2): 0.3, ("BatchNorm2d", 64): 0.6,
                         ("GroupNorm", 2): 0.55, ("GroupNorm", 64): 0.55})
    assert E.verdict(good)[0] == "reproduced"
    bad = fake_results({("BatchNorm2d", 2): 0.7, ("BatchNorm2d", 64): 0.6,
                        ("GroupNorm", 2): 0.55, ("GroupNorm", 64): 0.55})
    assert E.verdict(bad)[0] == "not reproduced"
    gn_drops_too = fake_results({("BatchNorm2d", 2): 0.3, ("BatchNorm2d", 64): 0.6,
                                 ("GroupNorm", 2): 0.4, ("GroupNorm", 64): 0.55})
    assert E.verdict(gn_drops_too)[0] == "inconclusive"


def test_table_is_sorted_by_the_smallest_batch_and_goes_between_the_markers(tmp_path):
    results = fake_results({("BatchNorm2d", 2): 0.3, ("BatchNorm2d", 64): 0.6,
                            ("GroupNorm", 2): 0.5, ("GroupNorm", 64): 0.55})
    config = dict(E.SCALES["quick"], norm="x", batch_size=2)
    metrics = {"runs": [{"config_name": n, "result": r} for n, rs in results.items() for r in rs],
               "config": {"seeds": [0, 1, 2], "configurations": {"a": config}}, "scale": "quick",
               "verdict": "reproduced", "verdict_reason": "why", "command": "python -m x",
               "provenance": {"git_commit": "abc", "git_dirty": False, "machine": {"cpu_count": 2}},
               "wall_time_s": 1.0}
    table = E.markdown_table(metrics)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "normalizer" not in line]
    assert rows[0].startswith("| GroupNorm") and rows[1].startswith("| BatchNorm2d")
    assert "0.501 ± 0.001" in rows[0]
    doc = tmp_path / "normalizers.md"
    doc.write_text("# The normalizers\n\nOld text.\n")
    E.write_into(str(doc), table)
    E.write_into(str(doc), table.replace("GroupNorm", "GroupNormX"))  # regenerated: replaced, not added
    text = doc.read_text()
    assert text.startswith("# The normalizers\n") and text.count(E.BEGIN) == 1 and "Old text." in text
    assert "GroupNormX" in text and "| GroupNorm |" not in text
