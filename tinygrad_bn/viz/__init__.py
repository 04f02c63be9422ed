"""Drawings of the forward and backward computation graph (Graphviz DOT; see docs/viz.md).

    from tinygrad_bn.viz import draw_graph, render_graph
    g = draw_graph(loss, params=model, max_depth=2)
    render_graph(g, "graph.svg")      # or g.render(...), or show `g` in Jupyter

Needs the Python package `graphviz` (pip install 'tinygrad_bn[viz]'), imported only when a graph
is drawn. Pictures need the Graphviz program `dot` or `graphviz-pure`; without them the DOT text
is written to a .dot file.
"""
from tinygrad_bn.viz.graph import (GradRecorder, GradStats, draw_graph, grad_stats,  # noqa: F401
                                   graph_class, record_grad_stats)
from tinygrad_bn.viz.legend import LEGEND, STYLES  # noqa: F401
from tinygrad_bn.viz.render import render_graph  # noqa: F401

__all__ = ["draw_graph", "render_graph", "record_grad_stats", "GradRecorder", "GradStats",
           "grad_stats", "graph_class", "LEGEND", "STYLES"]
