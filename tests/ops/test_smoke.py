from tests.helpers import check_grads, check_torch, torch


def test_mul_add_parity(device):
    check_torch(lambda a, b: (a * b + a).sum(1), lambda a, b: (a * b + a).sum(1), [(3, 4), (4,)], device=device)


def test_mul_grads(device):
    check_grads(lambda a, b: a * b, [(2, 3), (3,)], device=device)
