"""The colors of a graph drawing, and the legend table drawn into every graph.

One entry per kind of node. `STYLES[kind]` holds the Graphviz node attributes of that kind;
`LEGEND` lists (kind, text) in the order the legend shows them. docs/viz.md shows the same table.
Change a color here and both the drawings and their legends follow.
"""

#: Graphviz node attributes per kind of node (merged over the graph's defaults:
#: shape=box, style="filled,rounded").
STYLES = {
    "op": {"fillcolor": "lightgrey"},
    "param": {"fillcolor": "lightblue"},
    "leaf": {"fillcolor": "lightyellow"},
    "saved": {"fillcolor": "orange"},
    "output": {"fillcolor": "darkolivegreen1"},
    "tensor": {"fillcolor": "white", "shape": "box", "style": "rounded"},
    "input": {"fillcolor": "white", "style": "filled,rounded,dashed"},
    "module": {"fillcolor": "thistle", "shape": "box3d", "style": "filled"},
    "fold": {"fillcolor": "khaki", "shape": "box3d", "style": "filled"},
    "truncated": {"fillcolor": "white", "shape": "note", "style": "filled"},
    # applied on top of a node's own style when its gradient has NaN or Inf
    "problem": {"fillcolor": "#ffb3b3", "color": "red", "fontcolor": "red", "penwidth": "3"},
}

#: (kind, text) rows of the legend, in order. Kinds always shown come first; the others are
#: listed only when the graph has such a node.
LEGEND = (
    ("op", "op (Function)"),
    ("param", "parameter (named leaf)"),
    ("leaf", "other leaf tensor"),
    ("saved", "saved for backward"),
    ("output", "output"),
    ("problem", "gradient NaN / Inf"),
    ("tensor", "tensor (forward)"),
    ("input", "input without grad"),
    ("module", "collapsed module"),
    ("fold", "folded identical blocks"),
    ("truncated", "not drawn (max_nodes)"),
)
ALWAYS_SHOWN = {"op", "param", "saved", "output", "problem"}


def legend_label(kinds_used=()):
    """An HTML-like Graphviz label: a one-column table of colored cells, one per kind."""
    rows = ['<TR><TD><B>legend</B></TD></TR>']
    for kind, text in LEGEND:
        if kind not in ALWAYS_SHOWN and kind not in kinds_used:
            continue
        style = STYLES[kind]
        fill = style.get("fillcolor", "white")
        if kind == "problem":
            text = f'<FONT COLOR="red">{text}</FONT>'
        rows.append(f'<TR><TD BGCOLOR="{fill}">{text}</TD></TR>')
    return ('<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="2" CELLPADDING="3">'
            + "".join(rows) + "</TABLE>>")
