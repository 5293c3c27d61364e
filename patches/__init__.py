"""Adapters that hook IndexCache into SGLang; everything SGLang-specific lives here and nowhere else."""
