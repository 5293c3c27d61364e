"""Cross-layer top-k overlap: how much each pair of DSA layers agrees on the tokens it selects.

The evidence IndexCache rests on (adjacent layers pick mostly the same tokens) measured on your model and
data, before any calibration: capture every layer's top-k under all-Full (in-process through
:class:`~sglang_indexcache.inprocess.LayerwiseDSA` in :mod:`.runs`, or from a live server in capture mode,
:mod:`.capture_files`), reduce it with the overlap kernel (:mod:`.overlap`), and write ``overlap.json``
(:mod:`.report`), a heatmap (:mod:`.heatmap`) and a summary. Engine-free: torch, tqdm and matplotlib.
Nothing is imported here, so the CLI starts without torch.
"""
