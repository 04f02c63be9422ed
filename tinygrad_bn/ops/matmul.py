"""Matrix product with NumPy/PyTorch semantics: 1-D operands are promoted to a row/column and
the extra dim removed again; leading (batch) dims broadcast."""
from tinygrad_bn.autograd.function import Function
from tinygrad_bn.ops._helpers import binary_operands, broadcast_shape, sum_to_shape


class MatMul(Function):
    """Y = A @ B (batched).   dA = G @ B^T,  dB = A^T @ G, each summed over broadcast batch dims."""

    def forward(self, a, b):
        self.save_for_backward(a=a, b=b)
        return a @ b

    def backward(self, g):
        a, b = self.saved("a", "b")
        (sa, _), (sb, _) = self.input_meta
        # view 1-D operands as matrices so that one formula covers every case
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        batch = broadcast_shape(a2.shape[:-2], b2.shape[:-2], "matmul")
        g2 = g.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        da = db = None
        if self.needs_input_grad[0]:
            da = sum_to_shape(matmul(g2, b2.transpose(-1, -2)), a2.shape).reshape(sa)
        if self.needs_input_grad[1]:
            db = sum_to_shape(matmul(a2.transpose(-1, -2), g2), b2.shape).reshape(sb)
        return da, db


def matmul(a, b):
    a, b = binary_operands(a, b, "matmul", check_broadcast=False)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments need to be at least 1D, but they are "
                           f"{a.ndim}D and {b.ndim}D")
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        rows = a.shape[-2] if a.ndim > 1 else 1
        cols = b.shape[-1] if b.ndim > 1 else 1
        raise RuntimeError(f"matmul: mat1 and mat2 shapes cannot be multiplied ({rows}x{k_a} and "
                           f"{k_b}x{cols}); operand shapes {list(a.shape)} and {list(b.shape)}")
    if a.ndim > 2 or b.ndim > 2:
        broadcast_shape(a.shape[:-2], b.shape[:-2] if b.ndim > 1 else (), "matmul (batch dims)")
    return MatMul.apply(a, b)
