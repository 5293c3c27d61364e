"""Run a PyTorch DSA causal LM one decoder layer at a time, under any ``LayerMap``, without rebuilding it.

Calibration, overlap analysis and evaluation all need the same three things from a model: the mean
next-token loss under a map, every layer's top-k under all-Full, and the ability to restart a forward at
layer ``j`` from states cached under another map that agrees with it before ``j``. A model provides them by
implementing :class:`LayerwiseDSA`; the runner functions in :mod:`.runner` do the rest, so a map means here
exactly what it means when served: a Full layer computes its own top-k, a Shared layer uses the top-k of the
nearest preceding Full layer.
"""

from .protocol import LayerState, LayerwiseDSA

__all__ = ["LayerState", "LayerwiseDSA"]
