"""Exact population statistics for every BatchNorm-type layer ("precise BN").

A BN layer's running statistics are an exponential moving average of per-batch statistics,
taken while the weights were still moving. The original paper (Ioffe & Szegedy 2015, Alg. 2)
instead uses, at inference, the population statistics of the trained network's activations:

    E[x]   = mean over every sample of every batch of the layer's input, per channel
    Var[x] = sum (x - E[x])^2 / (M - 1)                      (unbiased, M samples per channel)

where a "sample" is one value of the channel: one row of a (N, C) input, one pixel of one
image of a (N, C, H, W) input. This is the population variance over all M values, not the
average of per-batch variances (which misses the spread of the batch means).

    update_bn_stats(model, batches, num_batches=None)

runs `model` in training mode under no_grad over the batches (downstream layers see the
train-mode activations they were trained on) and, for every BN-type module with running
buffers (BatchNorm1d/2d, SyncBatchNorm, GhostBatchNorm1d/2d, BatchRenorm1d/2d: every
subclass of the BN family whose running_mean is not None), records per channel the count n,
mean m and centred sum of squares S of its inputs. Batches are merged with Chan et al.'s
stable pairwise update (no large sums of squares that cancel):

    d = m_b - m;   m <- m + d * n_b / (n + n_b);   S <- S + S_b + d^2 * n n_b / (n + n_b);   n <- n + n_b

in float64; then running_mean = m and running_var = S / (n - 1), cast to the buffers' dtype.

During the pass each module's momentum is set to 0 (its running buffers stay as they were,
so no layer's train-mode output depends on a half-updated average); afterwards momentum and
every module's training flag are restored. num_batches_tracked is set to the number of
batches the statistics were computed over, as torch.optim.swa_utils.update_bn leaves it: the
buffers now hold a plain average over that many batches, so a later cumulative-average
(momentum=None) training continues with the right weight 1 / (count + 1).

SyncBatchNorm under MPI synchronises its forward as usual, but the statistics recorded here
are those of this rank's inputs only (call it on every rank with the same data, or on one
rank and broadcast the buffers).
"""
from tinygrad_bn import backend
from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.norms.batchnorm import _BatchNorm
from tinygrad_bn.tensor import Tensor

__all__ = ["update_bn_stats"]


class _ChannelMoments:
    """Per-channel count, mean and centred sum of squares of everything seen, merged stably."""

    def __init__(self):
        self.count = 0
        self.mean = None
        self.centred_sq = None

    def add(self, array, name):
        if array.ndim < 2:
            raise ValueError(f"update_bn_stats: {name} got a {array.ndim}D input of shape "
                             f"{tuple(array.shape)}; expected (N, C, *)")
        xp = backend.xp_of(array)
        axes = (0,) + tuple(range(2, array.ndim))
        n_b = array.size // array.shape[1]
        if n_b == 0:
            return
        x = array.astype(xp.float64)
        mean_b = x.mean(axis=axes)
        centred_sq_b = ((x - mean_b.reshape((1, -1) + (1,) * (array.ndim - 2))) ** 2).sum(axis=axes)
        if self.count == 0:
            self.count, self.mean, self.centred_sq = n_b, mean_b, centred_sq_b
            return
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.centred_sq = self.centred_sq + centred_sq_b + delta * delta * (self.count * n_b / total)
        self.count = total


def _as_input(batch, device):
    """A DataLoader's (inputs, targets) gives its inputs; an array becomes a Tensor."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("update_bn_stats: got an empty tuple as a batch; expected a Tensor "
                             "or an (inputs, targets) pair")
        batch = batch[0]
    if isinstance(batch, Tensor):
        return batch
    return Tensor(batch, device=device)


def update_bn_stats(model, batches, num_batches=None):
    """Set every BN-type module's running_mean / running_var to the exact population mean and
    unbiased variance of its inputs over all samples of `batches` (see the module docstring).

    batches: an iterable of input Tensors / arrays, or of (inputs, targets) pairs (a DataLoader).
    num_batches: use only the first num_batches of them (None: all). Returns the model."""
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"update_bn_stats: num_batches must be a positive int or None, "
                         f"got {num_batches!r}")
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, _BatchNorm) and m.running_mean is not None and m.running_var is not None]
    if not layers:
        raise ValueError(f"update_bn_stats: {type(model).__name__} has no BatchNorm-type module "
                         f"with running statistics (track_running_stats=True); nothing to update")
    moments = {id(m): _ChannelMoments() for _, m in layers}
    names = {id(m): name or type(m).__name__ for name, m in layers}

    def record(module, args):
        moments[id(module)].add(args[0].data if isinstance(args[0], Tensor) else args[0],
                                names[id(module)])

    saved_momentum = {id(m): m.momentum for _, m in layers}
    saved_training = {id(m): m.training for m in model.modules()}
    handles = [m.register_forward_pre_hook(record) for _, m in layers]
    device = layers[0][1].running_mean.device
    seen = 0
    try:
        for _, m in layers:
            m.momentum = 0.0
        model.train()
        with no_grad():
            for batch in batches:
                if num_batches is not None and seen >= num_batches:
                    break
                model(_as_input(batch, device))
                seen += 1
    finally:
        for handle in handles:
            handle.remove()
        for _, m in layers:
            m.momentum = saved_momentum[id(m)]
        for m in model.modules():
            m.training = saved_training[id(m)]
    if seen == 0:
        raise ValueError("update_bn_stats: batches is empty; need at least one batch to compute "
                         "population statistics")
    for name, m in layers:
        acc = moments[id(m)]
        if acc.count < 2:
            raise ValueError(f"update_bn_stats: {names[id(m)]} saw {acc.count} value(s) per channel "
                             f"over {seen} batch(es); the unbiased variance needs at least 2")
        dtype = m.running_mean.dtype
        m.running_mean.data[...] = acc.mean.astype(dtype)
        m.running_var.data[...] = (acc.centred_sq / (acc.count - 1)).astype(m.running_var.dtype)
        m.running_mean._version[0] += 1
        m.running_var._version[0] += 1
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.data[...] = seen
            m.num_batches_tracked._version[0] += 1
    return model
