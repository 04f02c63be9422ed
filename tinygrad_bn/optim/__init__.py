"""Optimizers and learning-rate schedulers, with PyTorch's names, defaults and state_dict layout."""
from tinygrad_bn.optim import lr_scheduler  # noqa: F401
from tinygrad_bn.optim.adam import Adam, AdamW  # noqa: F401
from tinygrad_bn.optim.optimizer import Optimizer  # noqa: F401
from tinygrad_bn.optim.sgd import SGD  # noqa: F401
from tinygrad_bn.optim.adadelta import Adadelta  # noqa: F401
from tinygrad_bn.optim.adagrad import Adagrad  # noqa: F401
from tinygrad_bn.optim.rmsprop import RMSprop  # noqa: F401

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
__all__ += ["RMSprop", "Adagrad", "Adadelta"]
