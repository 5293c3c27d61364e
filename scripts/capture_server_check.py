"""Server capture mode on a real SGLang: capture, reduce on the GPU, and compare with a second capture.

Launches one server (all-Full map, capture mode on, no radix cache so every capture is a full prefill, chunked
prefill so prompts span several forwards), sends the prompts as flagged requests twice and once unflagged,
and checks: every flagged request left a capture of every layer and position (the unflagged one none); the
Triton kernel and the torch reference agree exactly on the captured indices; and how far two captures of the
same prompts differ (SGLang's DSA path is not bitwise reproducible: this is the floor any comparison of
captures has to be judged against). Runs ``sglang-indexcache analyze --url`` end to end as well.

    python scripts/capture_server_check.py --model /tmp/rand-dsa --out results/capture-check
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.capture_check import Options, run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("--model", required=True, help="a servable DSA checkpoint (scripts/make_random_checkpoint.py)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--port", type=int)
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--prompt-len", type=int)
    ap.add_argument("--inprocess", action="store_true",
                    help="also capture the same prompts in-process (transformers) and compare with the server's")
    run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
