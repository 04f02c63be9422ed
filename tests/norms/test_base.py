"""norms/_base.py's restores_count_on_error: a BatchNorm-type layer whose forward refuses the
batch (bad shape, one value per channel, wrong channel count, NaN for the whitening) has not
counted it in num_batches_tracked afterwards, while a good batch still counts once."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.norms.batchnorm import BatchNorm1d, BatchNorm2d
from tinygrad_bn.norms.batchrenorm import BatchRenorm1d, BatchRenorm2d
from tinygrad_bn.norms.decorrelated import DecorrelatedBatchNorm
from tinygrad_bn.norms.ghostbn import GhostBatchNorm1d, GhostBatchNorm2d
from tinygrad_bn.norms.syncbn import SyncBatchNorm

NAN_2D = np.ones((4, 3))
NAN_2D[0, 0] = np.nan

# (layer, a good input, [(bad input, error type, message fragment)])
CASES = [
    (lambda: BatchNorm2d(3), (4, 3, 2, 2), [((1, 3, 1, 1), ValueError, "more than 1 value per channel"),
                                            ((4, 5, 2, 2), RuntimeError, "expected input with 3 channels"),
                                            ((4, 3), ValueError, "expected 4D input")]),
    (lambda: BatchNorm1d(3, momentum=None), (4, 3), [((1, 3), ValueError, "more than 1 value per channel"),
                                                     ((4, 2), RuntimeError, "expected input with 3 channels")]),
    (lambda: SyncBatchNorm(3), (4, 3, 2), [((1, 3), ValueError, "more than 1 value per channel"),
                                           ((4, 2, 2), RuntimeError, "expected input with 3 channels")]),
    (lambda: GhostBatchNorm2d(3, virtual_batch_size=2), (4, 3, 2, 2),
     [((4, 5, 2, 2), RuntimeError, "should contain 5 elements")]),
    (lambda: GhostBatchNorm1d(3, virtual_batch_size=2), (4, 3), [((4, 2), RuntimeError, "should contain 2")]),
    (lambda: BatchRenorm2d(3), (4, 3, 2, 2), [((1, 3, 1, 1), ValueError, "more than 1 value per channel"),
                                              ((4, 5, 2, 2), RuntimeError, "should contain 5 elements")]),
    (lambda: BatchRenorm1d(3), (4, 3), [((4, 2), RuntimeError, "should contain 2 elements")]),
    (lambda: DecorrelatedBatchNorm(3, groups=1), (4, 3), [((1, 3), ValueError, "more than 1 value"),
                                                ((4, 2), ValueError, r"match num_features \(3\)"),
                                                (NAN_2D, RuntimeError, "DecorrelatedBatchNorm: the batch "
                                                                       "covariance")]),
]


@pytest.mark.parametrize("make, good, bad", CASES,
                         ids=[f"{type(make()).__name__}-{len(good)}d" for make, good, _ in CASES])
def test_a_refused_batch_is_not_counted(make, good, bad):
    layer = make()
    layer(tg.randn(*good))
    per_batch = int(layer.num_batches_tracked.item())  # GhostBatchNorm: one per ghost batch
    assert per_batch >= 1
    for x, error, fragment in bad:
        x = tg.tensor(x) if isinstance(x, np.ndarray) else tg.randn(*x)
        with pytest.raises(error, match=fragment):
            layer(x)
        assert int(layer.num_batches_tracked.item()) == per_batch, (type(layer).__name__, fragment)
    layer(tg.randn(*good))
    assert int(layer.num_batches_tracked.item()) == 2 * per_batch
