"""Build the testbed corpora (prose, code) from Debian packages: deterministic train / calibration / held-out.

    python scripts/testbed_data.py [--out sglang_indexcache/testbed/splits] [--cache build/debs]
"""

from __future__ import annotations

from pathlib import Path

import typer

from sglang_indexcache.testbed.corpus import BUDGETS, build
from sglang_indexcache.testbed.load import DEFAULT_BASE, load_tokenizer

DEFAULT_OUT = Path("sglang_indexcache/testbed/splits")


def main(
    out: Path = DEFAULT_OUT,
    cache: Path = Path("build/debs"),
    base: str = DEFAULT_BASE,
    train_tokens: int = BUDGETS["train"],
    eval_tokens: int = BUDGETS["heldout"],
) -> None:
    budgets = {"train": train_tokens, "calibration": eval_tokens, "heldout": eval_tokens}
    manifest = build(out, cache, load_tokenizer(base), budgets)
    print(f"{'domain':8} {'split':12} {'documents':>9} {'tokens':>9}  sha256")
    for domain, entry in manifest["domains"].items():
        for split, rec in entry["splits"].items():
            print(f"{domain:8} {split:12} {rec['documents']:9d} {rec['tokens']:9d}  {rec['sha256'][:16]}")


if __name__ == "__main__":
    typer.run(main)
