"""Module parity with PyTorch: copy a torch module's weights into ours, run both on the same input,
compare the output, the input gradient and every parameter gradient."""
import numpy as np

import tinygrad_bn as tg
from tests.helpers import assert_close, torch


def load_from_torch(ours, theirs):
    """Copy a torch module's state into ours through load_state_dict (NumPy arrays, strict)."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours


def check_module(ours, theirs, input_shape, device="cpu", dtype=np.float64, atol=1e-6, rtol=1e-5,
                 seed=0, input_array=None):
    """Forward output, input gradient and parameter gradients of ours against theirs."""
    theirs = theirs.to(torch.float64 if dtype == np.float64 else torch.float32)
    load_from_torch(ours, theirs)
    ours.to(device).to(dtype)
    rng = np.random.default_rng(seed)
    x_np = input_array if input_array is not None else rng.standard_normal(input_shape).astype(dtype)
    x = tg.tensor(x_np, device=device, requires_grad=True)
    x_t = torch.tensor(x_np, requires_grad=True)
    out, ref = ours(x), theirs(x_t)
    assert_close(out, ref, atol, rtol, what="forward output")
    assert out.device == device
    g = rng.standard_normal(ref.shape).astype(dtype)
    out.backward(tg.tensor(g, device=device))
    ref.backward(torch.tensor(g))
    assert_close(x.grad, x_t.grad, atol, rtol, what="input gradient")
    torch_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.device == device, f"{name} is on {p.device}"
        assert_close(p.grad, torch_params[name].grad, atol, rtol, what=f"gradient of {name}")
    return out
