"""Pruning at initialization: scorers, mask selection and the iterative loop.

    from onnxprune.pruning import prune_twin, prunable_tensors, PruneResult, METHODS
    result = prune_twin(twin, method="synflow", density=0.01)   # masks set on the twin

Where things live: targets.py (what is prunable), scorers.py (how a score is computed, one class per
method), linearize.py (SynFlow's policy for nonlinear ops), masks.py (exact top-k among unpruned
entries), loop.py (the schedule), state.py (the twin comes back exactly as it was).
"""

from .linearize import linearized
from .loop import SCHEDULES, PruneResult, keep_schedule, prune_twin
from .masks import SCOPES, select_masks
from .scorers import DATA_METHODS, METHODS, SCORERS, Scorer, score
from .inputs import resolve_shapes
from .targets import prunable_tensors

# Not lazy (PEP 562) like onnxprune/__init__.py: every module here needs torch, so importing any of
# them loads it anyway; the torch-free names the CLI needs live in onnxprune/choices.py.
__all__ = ["DATA_METHODS", "METHODS", "SCHEDULES", "SCOPES", "SCORERS", "PruneResult", "Scorer", "keep_schedule",
           "linearized", "prunable_tensors", "prune_twin", "resolve_shapes", "score", "select_masks"]
