"""The differentiable primitives, one family per file. Each file holds Function classes (one graph
node each, forward and backward side by side) followed by their lowercase functional forms."""
