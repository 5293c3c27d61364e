"""The prompts to analyse: JSON lines of ``{"input_ids": [...]}`` or ``{"text": "..."}``, a plain text file, or
a ``.npy`` array of token ids (one long stream, e.g. a tokenised corpus split; cut it with ``--seq-len``)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError

FIX = 'give a .txt file, a .npy array of token ids, or JSON lines of {"input_ids": [ints]} or {"text": "..."}'


def read_records(path: Path) -> list[dict]:
    """Each record is ``{"input_ids": [...]}`` or ``{"text": ...}``, in file order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "--data", "no such file", FIX)
    if path.suffix == ".npy":
        import numpy as np

        try:
            ids = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(path, "--data", f"not a numpy array ({e})", FIX) from None
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or not ids.size:
            raise InputError(path, "--data", f"holds a {ids.dtype} array of shape {ids.shape}, not token ids", FIX)
        return [{"input_ids": ids.astype(np.int64).tolist()}]
    if path.suffix != ".jsonl":
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise InputError(path, "--data", "the file is empty", FIX)
        return [{"text": text}]
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(path, f"line {number}", f"not JSON ({e.msg})", FIX) from None
        if not isinstance(record, dict) or not ({"input_ids", "text"} & set(record)):
            raise InputError(path, f"line {number}", "has neither input_ids nor text", FIX)
        ids = record.get("input_ids")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(t, int) and t >= 0 for t in ids)):
            raise InputError(path, f"line {number}: input_ids", "is not a list of token ids", FIX)
        records.append({"input_ids": ids} if ids is not None else {"text": str(record["text"])})
    if not records:
        raise InputError(path, "--data", "holds no records", FIX)
    return records


def token_sequences(records: list[dict], tokenizer, seq_len: int | None, max_sequences: int | None,
                    source: Path) -> list[list[int]]:
    """Token ids per sequence: each record as it is, or (with ``seq_len``) all records' tokens in windows of
    ``seq_len`` (the remainder dropped)."""
    ids = []
    for record in records:
        if "input_ids" in record:
            ids.append(record["input_ids"])
        elif tokenizer is None:
            raise InputError(source, "text", "this model has no tokenizer", 'give {"input_ids": [...]} records')
        else:
            ids.append(tokenizer(record["text"], add_special_tokens=False)["input_ids"])
    if seq_len is not None:
        flat = [t for seq in ids for t in seq]
        ids = [flat[i:i + seq_len] for i in range(0, len(flat) - seq_len + 1, seq_len)]
        if not ids:
            raise InputError(source, "--seq-len", f"the data holds {len(flat)} tokens, fewer than {seq_len}",
                             "give more data or a smaller --seq-len")
    ids = [seq for seq in ids if seq]
    if not ids:
        raise InputError(source, "--data", "every record is empty", FIX)
    return ids[:max_sequences] if max_sequences else ids
