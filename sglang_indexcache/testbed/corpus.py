"""Prose and code corpora from Debian packages, split deterministically into train / calibration / held-out.

Every document (one file of a package) goes to a split by the sha256 of its content, so identical files land
in the same split and held-out text can never reach training or calibration. Each split is the documents in
hash order, tokenised, joined by EOS, cut at a token budget, and saved as ``<domain>-<split>.npy`` (uint16 or
uint32) with its sha256 and token count in ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MapError

SPLITS = ("train", "calibration", "heldout")
# per-mille shares of the hash space: held-out and calibration first, the rest trains
SHARES = {"heldout": 50, "calibration": 50}
BUDGETS = {"train": 4_000_000, "calibration": 262_144, "heldout": 262_144}
MAX_DOC_BYTES = 200_000


@dataclass(frozen=True)
class Source:
    package: str
    pattern: str  # a glob under the unpacked package root
    exclude: str | None = None  # a path part that rules a file out (Go's testdata trees)


DOMAINS: dict[str, tuple[Source, ...]] = {
    "prose": (Source("python3.11-doc", "usr/share/doc/python3.11/html/_sources/**/*.rst.txt"),),
    "code": (
        Source("libpython3.11-stdlib", "usr/lib/python3.11/**/*.py"),
        Source("golang-1.19-src", "usr/share/go-1.19/src/**/*.go", exclude="testdata"),
    ),
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_of(digest: str) -> str:
    bucket = int(digest[:8], 16) % 1000
    if bucket < SHARES["heldout"]:
        return "heldout"
    if bucket < SHARES["heldout"] + SHARES["calibration"]:
        return "calibration"
    return "train"


def fetch_package(package: str, cache: Path) -> tuple[Path, dict]:
    """``apt-get download`` ``package`` into ``cache`` (once) and unpack it; returns the root and a record."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True, capture_output=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        raise MapError(str(cache), package, "apt-get download left no .deb", "check the apt sources")
    deb = debs[-1]
    root = cache / deb.stem
    if not root.is_dir():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root, {"package": package, "deb": deb.name, "sha256": sha256_bytes(deb.read_bytes())}


def documents(sources: Iterable[Source], cache: Path) -> tuple[list[tuple[str, str]], list[dict]]:
    """``(sha256, text)`` of every distinct document of ``sources``, in hash order, and the packages used."""
    docs: dict[str, str] = {}
    records = []
    for source in sources:
        root, record = fetch_package(source.package, cache)
        records.append(record)
        for path in sorted(root.glob(source.pattern)):
            if (source.exclude and source.exclude in path.parts) or path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if not data.strip() or len(data) > MAX_DOC_BYTES:
                continue
            docs.setdefault(sha256_bytes(data), data.decode("utf-8", errors="replace"))
    return sorted(docs.items()), records


def pack(texts: Iterable[str], encode: Callable[[str], list[int]], eos: int, budget: int) -> np.ndarray:
    """Tokenise ``texts`` in order, each followed by ``eos``, until ``budget`` tokens (cut there)."""
    out: list[int] = []
    for text in texts:
        out.extend(encode(text))
        out.append(eos)
        if len(out) >= budget:
            break
    return np.asarray(out[:budget])


def build(out: Path, cache: Path, tokenizer, budgets: dict[str, int] = BUDGETS) -> dict:
    """Write every domain's splits and ``manifest.json`` under ``out``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if len(tokenizer) <= 2**16 else np.uint32
    manifest: dict = {"tokenizer": getattr(tokenizer, "name_or_path", ""), "dtype": np.dtype(dtype).name, "domains": {}}
    for domain, sources in DOMAINS.items():
        docs, packages = documents(sources, cache)
        by_split = {s: [(h, t) for h, t in docs if split_of(h) == s] for s in SPLITS}
        entry: dict = {"packages": packages, "splits": {}}
        for split in SPLITS:
            def encode(text: str) -> list[int]:
                return tokenizer(text, add_special_tokens=False).input_ids

            tokens = pack((t for _, t in by_split[split]), encode, tokenizer.eos_token_id, budgets[split]).astype(dtype)
            path = out / f"{domain}-{split}.npy"
            np.save(path, tokens)
            entry["splits"][split] = {
                "file": path.name,
                "tokens": int(tokens.size),
                "documents": len(by_split[split]),
                "sha256": sha256_bytes(path.read_bytes()),
                "documents_sha256": sha256_bytes("".join(h for h, _ in by_split[split]).encode()),
            }
        held = {h for h, _ in by_split["heldout"]}
        if held & {h for s in ("train", "calibration") for h, _ in by_split[s]}:
            raise AssertionError(f"{domain}: a held-out document is also in train or calibration")
        manifest["domains"][domain] = entry
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_split(directory: Path, domain: str, split: str, verify: bool = True) -> np.ndarray:
    """One split's tokens, checked against the manifest's sha256."""
    directory = Path(directory)
    if not (directory / "manifest.json").is_file():
        raise MapError(str(directory), "manifest.json", "missing", "build the splits with scripts/testbed_data.py")
    manifest = json.loads((directory / "manifest.json").read_text())
    try:
        record = manifest["domains"][domain]["splits"][split]
    except KeyError:
        raise MapError(
            f"{directory}/manifest.json",
            f"domains.{domain}.splits.{split}",
            "no such split",
            "rebuild with scripts/testbed_data.py",
        ) from None
    path = directory / record["file"]
    if not path.is_file():
        raise MapError(str(path), record["file"], "missing", "rebuild with scripts/testbed_data.py")
    if verify and sha256_bytes(path.read_bytes()) != record["sha256"]:
        raise MapError(str(path), "sha256", "differs from manifest.json", "rebuild with scripts/testbed_data.py")
    return np.load(path)


def windows(tokens: np.ndarray, seq: int, count: int | None = None) -> np.ndarray:
    """Non-overlapping ``[n, seq]`` windows from the start of ``tokens`` (at most ``count``)."""
    n = tokens.size // seq
    if count is not None:
        n = min(n, count)
    return tokens[: n * seq].reshape(n, seq).astype(np.int64)
