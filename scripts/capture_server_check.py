"""Server capture mode on a real SGLang: capture, reduce on the GPU, and compare with a second capture.

What it runs and checks: sglang_indexcache.bench.capture_check.

    python scripts/capture_server_check.py --model /tmp/rand-dsa --out results/capture-check
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench import capture_check
from sglang_indexcache.bench.capture_check import Options, run


def main(argv=None) -> None:
    usage = __doc__.split("\n\n")[-1]
    ap = argparse.ArgumentParser(description=capture_check.__doc__ + "\n" + usage,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("--model", required=True, help="a servable DSA checkpoint (scripts/make_random_checkpoint.py)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--port", type=int)
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--prompt-len", type=int)
    ap.add_argument("--sglang", help="the SGLang release the server must report, e.g. 0.5.17 with the 0.5.17 kit")
    ap.add_argument("--inprocess", action="store_true",
                    help="also capture the same prompts in-process (transformers) and compare with the server's")
    run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
