"""Parameter: a leaf Tensor that a Module registers as trainable (requires_grad=True)."""
from tinygrad_bn.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a module parameter: always a leaf, requires grad by default."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        p = Parameter(self.data.copy(), requires_grad=self.requires_grad)
        memo[id(self)] = p
        return p
