"""Patches applied in every scheduler process: the model (indexer, roles, checks, weights), its index-key
memory, and the scheduler (status, map switching, top-k capture). Importing this package applies nothing."""
