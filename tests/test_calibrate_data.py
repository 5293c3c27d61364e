"""Calibration data: .txt, .jsonl (text or input_ids), dataset directories; one-line errors for bad input."""

import json

import pytest

from sglang_indexcache.calibrate.data import InputError, load_calibration


class CharTokenizer:
    """Each character is a token; eos is 0."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 90 + 1 for c in text]}


def test_text_file_is_tokenised_and_cut(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abcdefghij" * 5)
    data = load_calibration(path, CharTokenizer(), seq_len=8, max_tokens=1000)
    assert data.seq_len == 8 and len(data.sequences) == 51 // 8
    assert data.sequences[0] == CharTokenizer()("abcdefgh")["input_ids"]
    assert data.num_tokens == 48 and data.data_hash.startswith("sha256:")


def test_jsonl_text_and_ids_and_token_budget(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"input_ids": list(range(1, 21))}) + "\n\n" + json.dumps({"text": "xyz"}) + "\n")
    data = load_calibration(path, CharTokenizer(), seq_len=5, max_tokens=10)
    assert data.sequences == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    everything = load_calibration(path, CharTokenizer(), seq_len=5, max_tokens=10**6)
    assert len(everything.sequences) == (20 + 3 + 1) // 5
    assert everything.tokens_hash != data.tokens_hash


def test_input_ids_need_no_tokenizer(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"input_ids": list(range(12))}) + "\n")
    assert len(load_calibration(path, None, seq_len=4, max_tokens=100).sequences) == 3


@pytest.mark.parametrize("content,where,message", [
    ("", "(file)", "the file is empty"),
    ("   \n", "(file)", "the file is empty"),
    ('{"text": "ab"}\n', "(data)", "tokens, fewer than one sequence"),
    ('{"txt": "ab"}\n', "(line)", "no 'text' or 'input_ids' field"),
    ("not json\n", "(line)", "invalid JSON"),
    ('{"input_ids": [1, -2]}\n', "input_ids", "not a list of non-negative integers"),
])
def test_bad_jsonl_is_one_line(tmp_path, content, where, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        load_calibration(path, CharTokenizer(), seq_len=8, max_tokens=100)
    assert err.value.key == where and message in err.value.problem
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_text_without_tokenizer_is_refused(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello " * 100)
    with pytest.raises(InputError, match="tokenizer"):
        load_calibration(path, None, seq_len=8, max_tokens=100)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_calibration(tmp_path / "nope.txt", None, seq_len=8, max_tokens=100)


def test_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"input_ids": [list(range(10)), list(range(10, 20))]}).save_to_disk(tmp_path / "d")
    data = load_calibration(tmp_path / "d", None, seq_len=5, max_tokens=100)
    assert data.sequences[0] == [0, 1, 2, 3, 4] and len(data.sequences) == 4


def test_dataset_directory_without_datasets_says_so(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="needs the datasets package"):
        load_calibration(tmp_path / "d", None, seq_len=5, max_tokens=100)


def test_npy_token_ids(tmp_path):
    import numpy as np

    np.save(tmp_path / "ids.npy", np.arange(30, dtype=np.uint16))
    data = load_calibration(tmp_path / "ids.npy", None, seq_len=10, max_tokens=100)
    assert data.sequences[2] == list(range(20, 30))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InputError, match="1-D array of non-negative integer"):
        load_calibration(tmp_path / "bad.npy", None, seq_len=2, max_tokens=100)


def test_the_tokenizer_loads_only_for_text(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"input_ids": list(range(12))}) + "\n")
    loads = []
    load_calibration(path, None, seq_len=4, max_tokens=100, load_tokenizer=lambda: loads.append(1))
    assert not loads
    path.write_text(json.dumps({"text": "abcdefgh"}) + "\n")
    data = load_calibration(path, None, seq_len=4, max_tokens=100,
                            load_tokenizer=lambda: loads.append(1) or CharTokenizer())
    assert loads == [1] and len(data.sequences) == 2
