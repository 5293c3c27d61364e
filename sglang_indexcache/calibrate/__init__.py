"""``sglang-indexcache calibrate``: the training-free greedy search for a model's layer map, on the user's data."""
