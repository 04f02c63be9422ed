"""examples/mnist_pytorch_port.py, the port of PyTorch's MNIST example: a --dry-run trains a step,
reports the test accuracy and saves a checkpoint that loads back into Net; a few steps lower
the loss; --data-dir reads MNIST IDX files; the embedded digits have MNIST's layout."""
import math
import re
import types

import numpy as np
import pytest

import tinygrad_bn as tg
from examples import mnist_pytorch_port as port
from tests.data.test_mnist import _write
from tests.helpers import needs_torch, torch

TRAIN_LINE = re.compile(r"Train Epoch: (\d+) \[(\d+)/(\d+) \((\d+)%\)\]\tLoss: (\S+)")
TEST_LINE = re.compile(r"Test set: Average loss: (\S+), Accuracy: (\d+)/(\d+) \((\d+)%\)")


def _run(argv, capsys):
    port.main(["--no-accel", *argv])
    out = capsys.readouterr().out
    return TRAIN_LINE.findall(out), TEST_LINE.findall(out)


def test_dry_run_trains_reports_accuracy_and_saves_a_loadable_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # --save-model writes mnist_cnn.npz in the current folder
    trains, tests = _run(["--dry-run", "--epochs", "1", "--save-model"], capsys)
    assert len(trains) == 1 and len(tests) == 1
    epoch, seen, n_train, _, loss = trains[0]
    assert (epoch, seen, n_train) == ("1", "0", "1438")
    assert math.isfinite(float(loss)) and abs(float(loss) - math.log(10)) < 0.5  # a fresh net: ~chance
    test_loss, correct, n_test, percent = tests[0]
    assert math.isfinite(float(test_loss)) and n_test == "359" and 0 <= int(correct) <= 359

    # the checkpoint holds Net's state dict; the loaded model reports exactly the same test line
    state = tg.load(str(tmp_path / "mnist_cnn.npz"))
    model = port.Net()
    assert sorted(state) == sorted(model.state_dict())
    model.load_state_dict(state)
    test_loader = tg.data.DataLoader(port.embedded_digits(train=False), batch_size=1000,
                                     transform=tg.data.transforms.Normalize((0.1307,), (0.3081,)))
    port.test(model, tg.device("cpu"), test_loader)
    assert TEST_LINE.findall(capsys.readouterr().out) == tests


def test_a_few_steps_lower_the_loss():
    tg.manual_seed(0)
    data = port.embedded_digits(train=True)
    subset = tg.data.ImageDataset(data.data[:256], data.targets[:256])
    loader = tg.data.DataLoader(subset, batch_size=64, shuffle=True,
                                transform=tg.data.transforms.Normalize((0.1307,), (0.3081,)))
    model = port.Net()
    optimizer = tg.optim.Adadelta(model.parameters(), lr=1.0)
    x, y = next(iter(tg.data.DataLoader(subset, batch_size=256, transform=loader.transform)))

    def eval_loss():
        model.eval()
        with tg.no_grad():
            return tg.nn.functional.nll_loss(model(x), y).item()

    before = eval_loss()
    args = types.SimpleNamespace(log_interval=100, dry_run=False)
    for epoch in (1, 2):
        port.train(args, model, tg.device("cpu"), loader, optimizer, epoch)
    after = eval_loss()
    assert math.isfinite(after) and after < before - 0.3, (before, after)


def test_data_dir_reads_mnist_idx_files(tmp_path, capsys):
    _write(tmp_path, "train", 70, gz=True, seed=0)
    _write(tmp_path, "t10k", 30, gz=False, seed=1)
    trains, tests = _run(["--data-dir", str(tmp_path), "--dry-run", "--epochs", "1",
                          "--test-batch-size", "16"], capsys)
    assert trains[0][2] == "70" and math.isfinite(float(trains[0][4]))
    assert tests[0][2] == "30"


def test_bad_data_dir_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        port.main(["--data-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--data-dir" in err and "train-images-idx3-ubyte" in err, err


def test_embedded_digits_have_the_mnist_layout():
    train, test = port.embedded_digits(train=True), port.embedded_digits(train=False)
    assert train.data.shape == (1438, 1, 28, 28) and test.data.shape == (359, 1, 28, 28)
    assert train.data.dtype == np.float32 and 0 <= train.data.min() and train.data.max() <= 1
    border = np.ones((28, 28), bool)
    border[4:24, 4:24] = False
    assert not train.data[:, 0, border].any()  # a 4-pixel empty margin around a 20x20 digit
    np.testing.assert_array_equal(train.targets, tg.data.Digits(train=True).targets)
    np.testing.assert_allclose(port.bilinear_matrix(8, 20).sum(1), 1.0)


@needs_torch
def test_resize_is_bilinear_interpolation():
    image = np.random.default_rng(0).random((3, 1, 8, 8))
    m = port.bilinear_matrix(8, 20)
    ours = np.einsum("ai,nij,bj->nab", m, image[:, 0], m)
    theirs = torch.nn.functional.interpolate(torch.tensor(image), size=(20, 20), mode="bilinear",
                                             align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
