"""Facts about an ONNX graph that every stage shares, read once per model and torch-free.

roles.py (what each op input is: weight, bias, scale, shift, statistic), constants.py (the one reader
of constant values), facts.py (`GraphFacts`: producers, readers, constants, weight-source tracing),
rewrite.py (in-place graph edits: hoisting subgraph weights, IR-3 input declarations).
"""

from .facts import GraphFacts, WeightUse, attr, constant_names, subgraphs, weight_uses

__all__ = ["GraphFacts", "WeightUse", "attr", "constant_names", "subgraphs", "weight_uses"]
