"""nn.Upsample, nn.AdaptiveMaxPool2d/1d, nn.AdaptiveAvgPool1d: PyTorch parity, repr, and construction errors."""
import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import check_torch, needs_torch, torch


@needs_torch
@pytest.mark.parametrize("kw,shape", [(dict(scale_factor=2), (1, 2, 3, 4)), (dict(size=(5, 7), mode="bilinear"), (1, 2, 3, 4)),
                                      (dict(scale_factor=1.5, mode="bilinear", align_corners=True), (2, 1, 3, 3)),
                                      (dict(size=9, mode="linear"), (1, 2, 4))])
def test_upsample_matches_torch(kw, shape):
    check_torch(nn.Upsample(**kw), torch.nn.Upsample(**kw), [shape])
    assert repr(nn.Upsample(**kw)) == repr(torch.nn.Upsample(**kw))


@needs_torch
def test_adaptive_pool_modules_match_torch():
    check_torch(nn.AdaptiveMaxPool2d((None, 3)), torch.nn.AdaptiveMaxPool2d((None, 3)), [(1, 2, 5, 7)])
    check_torch(nn.AdaptiveMaxPool1d(3), torch.nn.AdaptiveMaxPool1d(3), [(1, 2, 7)])
    check_torch(nn.AdaptiveAvgPool1d(3), torch.nn.AdaptiveAvgPool1d(3), [(1, 2, 7)])
    assert repr(nn.AdaptiveMaxPool2d((None, 3))) == repr(torch.nn.AdaptiveMaxPool2d((None, 3)))


def test_upsample_construction_errors():
    with pytest.raises(ValueError, match="Upsample: exactly one of size or scale_factor"):
        nn.Upsample()
    with pytest.raises(ValueError, match="Upsample: exactly one of size or scale_factor"):
        nn.Upsample(size=2, scale_factor=2)
    with pytest.raises(NotImplementedError, match="Upsample: mode 'area' is not supported"):
        nn.Upsample(size=2, mode="area")
    y, idx = nn.AdaptiveMaxPool2d(2, return_indices=True)(tg.randn(1, 1, 4, 4))
    assert y.shape == idx.shape == (1, 1, 2, 2) and idx.dtype == tg.int64
    assert isinstance(nn.Upsample(scale_factor=2)(tg.tensor(np.ones((1, 1, 2)))), tg.Tensor)
