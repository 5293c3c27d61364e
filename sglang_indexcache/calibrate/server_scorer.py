"""Scoring maps on a live SGLang server with this package's plugin: the path for models served with TP/PP/DP.

Each map is set with ``POST /indexcache/map`` and scored from prompt logprobs (``/generate`` with
``return_logprob`` and ``logprob_start_len: 0``) of the calibration sequences. No cached prefix computed under
another map is reused: the switch flushes the radix cache, the scorer flushes it again (``/flush_cache``)
before scoring, and ``logprob_start_len: 0`` keeps SGLang from matching a cached prefix for these prompts.

A server that stops answering mid-search (a restart) is waited for, checked again, and the interrupted map
is switched to and scored again from the start.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ..admin import AdminError, status, switch_map
from ..schedule import FULL
from .data import InputError
from .search import flip


class ServerGone(RuntimeError):
    """The server did not come back within the wait."""


class ServerScorer:
    def __init__(self, url: str, admin_api_key: str, sequences: Sequence[Sequence[int]], num_layers: int,
                 batch_size: int = 8, wait_s: float = 600.0, poll_s: float = 2.0, timeout_s: float = 3600.0):
        self.url, self.key = url.rstrip("/"), admin_api_key
        self.sequences = [list(s) for s in sequences]
        self.num_layers, self.batch_size = num_layers, batch_size
        self.wait_s, self.poll_s, self.timeout_s = wait_s, poll_s, timeout_s
        self.evaluations = 0  # maps scored over the whole calibration set
        self.restarts = 0  # times the server went away and came back

    # -- checks ---------------------------------------------------------------------------------------------

    def check(self, needed_full: Sequence[int] | None = None) -> None:
        """Refuse a server that is not ours, serves another layer count, or cannot switch to every candidate:
        layers Shared at its start-up have no indexer weights or index-key cache."""
        needed = set(range(self.num_layers) if needed_full is None else needed_full)
        try:
            ranks = status(self.url, self.key)
        except AdminError as e:
            if e.status == 0:
                raise InputError(self.url, "--url", "the server cannot be reached",
                                 "start the SGLang server with this package installed, or fix --url") from None
            raise InputError(self.url, "GET /indexcache", str(e),
                             "start the server with this package and pass its --admin-api-key") from None
        for rank, state in enumerate(ranks):
            if state is None:
                raise InputError(self.url, f"dp rank {rank}", "serves no IndexCache map",
                                 "start the server with a map, e.g. all-F: SGLANG_INDEXCACHE_MAP=<all-F map>")
            if state["num_layers"] != self.num_layers:
                raise InputError(self.url, f"dp rank {rank}", f"serves {state['num_layers']} layers but the "
                                 f"model has {self.num_layers}", "point --url and --model at the same model")
            missing = sorted(needed - set(state["switchable_full_layers"]))
            if missing:
                raise InputError(self.url, f"dp rank {rank}", f"started with layers {missing} Shared, so the "
                                 "search cannot make them Full", "restart the server with an all-F map "
                                 '(--json-model-override-args \'{"index_topk_freq": 1}\') and --disable-cuda-graph')

    # -- Scorer ---------------------------------------------------------------------------------------------

    def start(self, pattern: str) -> float:
        self.check([l for l, c in enumerate(pattern) if c == FULL])
        self.pattern, self._scored = pattern, {}
        self.loss = self.score(pattern)
        return self.loss

    def candidate_loss(self, layer: int) -> float:
        self._scored[layer] = self.score(flip(self.pattern, layer))
        return self._scored[layer]

    def commit(self, layer: int) -> float:
        # A step's first flip was scored under the committed map; further flips of the same step were not.
        loss = self._scored[layer] if layer in self._scored else self.score(flip(self.pattern, layer))
        self.pattern, self.loss, self._scored = flip(self.pattern, layer), loss, {}
        return loss

    # -- scoring --------------------------------------------------------------------------------------------

    def score(self, pattern: str) -> float:
        """Mean next-token loss of the calibration sequences served under ``pattern``."""
        while True:
            try:
                loss = self._score_once(pattern)
                break
            except (ConnectionError, OSError, AdminError) as e:
                if isinstance(e, AdminError) and e.status != 0:
                    raise InputError(
                        self.url,
                        "POST /indexcache/map",
                        str(e),
                        "start the server with --disable-cuda-graph, without --pp-size, and all-F",
                    ) from None
                self._wait_for_restart()
        self.evaluations += 1
        return loss

    def _score_once(self, pattern: str) -> float:
        answer = switch_map(self.url, self.key, index_topk_pattern=pattern, timeout=self.timeout_s)
        served = {state["pattern"] for state in answer["dp_ranks"]}
        if served != {pattern}:
            raise InputError(
                self.url,
                "POST /indexcache/map",
                f"asked for {pattern}, ranks serve {sorted(served)}",
                "serve without pipeline stages, whose first layers are forced Full",
            )
        self._post("/flush_cache", None)
        total, count = 0.0, 0
        for i in range(0, len(self.sequences), self.batch_size):
            chunk = self.sequences[i : i + self.batch_size]
            outputs = self._post(
                "/generate",
                {
                    "input_ids": chunk,
                    "return_logprob": True,
                    "logprob_start_len": 0,
                    "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
                },
            )
            for ids, output in zip(chunk, outputs if isinstance(outputs, list) else [outputs]):
                entries = output["meta_info"]["input_token_logprobs"]
                if len(entries) == len(ids) and entries[0][0] is None:
                    entries = entries[1:]  # the first token has nothing to be predicted from
                logprobs = [entry[0] for entry in entries]
                if len(logprobs) != len(ids) - 1 or any(lp is None for lp in logprobs):
                    raise RuntimeError(f"{self.url}: expected {len(ids) - 1} prompt logprobs, got {len(logprobs)}")
                total -= sum(logprobs)
                count += len(logprobs)
        return total / count

    def _post(self, path: str, body: dict | None) -> Any:
        data = b"{}" if body is None else json.dumps(body).encode()
        # /flush_cache is an admin endpoint once the server has an admin key; /generate ignores the header.
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{self.url}{path}: HTTP {e.code}: {e.read()[:300]!r}") from None
        return json.loads(text) if path == "/generate" else text

    def _wait_for_restart(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            time.sleep(self.poll_s)
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=10):
                    pass
            except OSError:
                continue
            self.check([l for l, c in enumerate(self.pattern) if c == FULL])
            self.restarts += 1
            return
        raise ServerGone(f"{self.url} did not answer for {self.wait_s:.0f} s; rerun with --resume once it is back")
