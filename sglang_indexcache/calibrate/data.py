"""Calibration data: a ``.txt`` file, a ``.jsonl`` file (``text`` or ``input_ids`` per line), a ``.npy`` array of
token ids, or a dataset saved with ``datasets.Dataset.save_to_disk``, cut into fixed-length token sequences.

Documents are tokenised with the model's own tokenizer, joined with its end-of-sequence token and cut into
sequences of ``seq_len`` tokens; every map is scored on exactly these sequences, in this order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MapError

TEXT, IDS = "text", "input_ids"


class InputError(MapError):
    """Bad calibration input (data, model or server), as one line naming where, what and the fix."""


@dataclass(frozen=True)
class Calibration:
    sequences: list[list[int]]  # every one seq_len tokens
    source: str
    data_hash: str  # sha256 of the file (or of a dataset directory's files)
    tokens_hash: str  # sha256 of the token ids scored, which is what a map's loss depends on

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def seq_len(self) -> int:
        return len(self.sequences[0])

    def batches(self, batch_size: int):
        """The sequences as ``[batch, seq_len]`` tensors, in order."""
        import torch

        return [torch.tensor(self.sequences[i:i + batch_size]) for i in range(0, len(self.sequences), batch_size)]


def load_calibration(path: str | Path, tokenizer: Any, seq_len: int, max_tokens: int,
                     load_tokenizer: Callable[[], Any] | None = None) -> Calibration:
    """Read, tokenise and cut ``path``; ``tokenizer`` may be None when the data give ``input_ids``, or come from
    ``load_tokenizer`` on the first text (token ids need no tokenizer at all)."""
    path = Path(path)
    docs = read_documents(path)
    stream: list[int] = []
    for where, doc in docs:
        if isinstance(doc, str):
            if tokenizer is None and load_tokenizer is not None:
                tokenizer, load_tokenizer = load_tokenizer(), None
            if tokenizer is None:
                raise InputError(where, TEXT, "text needs the model's tokenizer, and the model directory has none",
                                 "add the tokenizer files to the model directory, or give input_ids")
            stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
            eos = getattr(tokenizer, "eos_token_id", None)
            if isinstance(eos, int):
                stream.append(eos)
        else:
            stream += doc
    if len(stream) < seq_len:
        raise InputError(str(path), "(data)", f"{len(stream)} tokens, fewer than one sequence of {seq_len}",
                         "give more text, or a shorter --seq-len (it must stay above the model's index_topk)")
    count = min(len(stream), max(max_tokens, seq_len)) // seq_len
    sequences = [stream[i * seq_len:(i + 1) * seq_len] for i in range(count)]
    tokens_hash = hashlib.sha256(json.dumps(sequences).encode()).hexdigest()
    return Calibration(sequences, str(path), f"sha256:{file_hash(path)}", f"sha256:{tokens_hash}")


def read_documents(path: Path) -> list[tuple[str, str | list[int]]]:
    """``(where, text or token ids)`` per document."""
    if path.is_dir():
        return _dataset_documents(path)
    if not path.is_file():
        raise InputError(str(path), "(file)", "no such file or directory",
                         "pass a .txt file, a .jsonl file or a dataset directory")
    if path.suffix == ".npy":
        return [(str(path), _npy_ids(path))]
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(
            str(path), "(file)", f"cannot read it as text ({e})", "pass a UTF-8 .txt or .jsonl file"
        ) from None
    if not text.strip():
        raise InputError(str(path), "(file)", "the file is empty", "give calibration text")
    if path.suffix != ".jsonl":
        return [(str(path), text)]
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(where, "(line)", f"invalid JSON ({e.msg})", "write one JSON object per line") from None
        docs.append((where, _document(record, where)))
    return docs


def _npy_ids(path: Path) -> list[int]:
    import numpy as np

    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(
            str(path), "(file)", f"not a NumPy array file ({e})", "save token ids with numpy.save"
        ) from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or (ids.size and ids.min() < 0):
        raise InputError(
            str(path),
            "(array)",
            f"a {ids.dtype} array of shape {ids.shape}",
            "give a 1-D array of non-negative integer token ids",
        )
    if ids.size == 0:
        raise InputError(str(path), "(file)", "the array is empty", "give calibration tokens")
    return ids.tolist()


def _document(record: Any, where: str) -> str | list[int]:
    if not isinstance(record, dict) or not (TEXT in record or IDS in record):
        raise InputError(
            where,
            "(line)",
            "no 'text' or 'input_ids' field",
            'write {"text": "..."} or {"input_ids": [1, 2, ...]} per line',
        )
    if IDS in record:
        ids = record[IDS]
        if not isinstance(ids, list) or not all(isinstance(t, int) and t >= 0 for t in ids):
            raise InputError(where, IDS, "not a list of non-negative integers", "give token ids as integers")
        return ids
    if not isinstance(record[TEXT], str):
        raise InputError(where, TEXT, "not a string", "give the text as a JSON string")
    return record[TEXT]


def _dataset_documents(path: Path) -> list[tuple[str, str | list[int]]]:
    try:
        import datasets
    except ImportError:
        raise InputError(
            str(path),
            "(directory)",
            "reading a dataset directory needs the datasets package",
            "pip install datasets, or pass a .txt or .jsonl file",
        ) from None
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise InputError(
            str(path),
            "(directory)",
            f"not a dataset saved with save_to_disk ({e})",
            "pass a directory written by Dataset.save_to_disk, or a .txt or .jsonl file",
        ) from None
    if isinstance(data, datasets.DatasetDict):
        split = "train" if "train" in data else next(iter(data))
        data = data[split]
    column = IDS if IDS in data.column_names else TEXT
    if column not in data.column_names:
        raise InputError(
            str(path),
            "(columns)",
            f"no 'text' or 'input_ids' column (has {data.column_names})",
            "save a dataset with a text or input_ids column",
        )
    return [(f"{path}[{i}]", _document({column: value}, f"{path}[{i}]")) for i, value in enumerate(data[column])]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
