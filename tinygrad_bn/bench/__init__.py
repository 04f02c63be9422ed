"""The benchmark suite: `python -m tinygrad_bn.bench`. Each case runs ours and the reference
(PyTorch, or bare NumPy where that is the fair floor) side by side in one process: warm-up,
several repetitions, median, and the ratio ours / reference. Timings are never asserted in tests."""
