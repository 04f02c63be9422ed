"""Bad options of `python -m tinygrad_bn.bench` end in one line naming the option, before any
case runs (the module's other tests need the oracle; these do not)."""
import pytest

from tinygrad_bn.bench import __main__ as bench


@pytest.mark.parametrize("argv, expected", [
    (["--threads", "-3"], "argument --threads: expected a positive integer, got -3"),
    (["--threads", "0"], "argument --threads: expected a positive integer, got 0"),
    (["--threads", "two"], "argument --threads: expected a positive integer, got 'two'"),
])
def test_bad_threads_is_one_line(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("the bench ran"))
    with pytest.raises(SystemExit) as info:
        bench.main(argv + ["--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and expected in err


def test_json_into_a_missing_folder_is_refused_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("the bench ran"))
    target = tmp_path / "missing" / "r.json"
    with pytest.raises(SystemExit) as info:
        bench.main(["--quick", "--json", str(target)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert f"--json: the folder {str(tmp_path / 'missing')!r} does not exist" in err


def test_json_that_is_a_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("the bench ran"))
    with pytest.raises(SystemExit):
        bench.main(["--json", str(tmp_path)])
    assert "is a folder" in capsys.readouterr().err
