"""The server backend against a stand-in IndexCache server whose prompt logprobs come from the toy model: the
same search as in process, no prefix reused across maps, refusals, and a server restart survived."""

import threading
import time

import pytest
import torch
from fake_server import FakeServer
from toy_dsa import ToyDSA

from sglang_indexcache.calibrate.data import InputError
from sglang_indexcache.calibrate.search import greedy_search
from sglang_indexcache.calibrate.server_scorer import ServerGone, ServerScorer
from sglang_indexcache.calibrate.torch_scorer import TorchScorer
from sglang_indexcache.inprocess.runner import token_losses

LAYERS = 8


@pytest.fixture(scope="module")
def toy():
    return ToyDSA(LAYERS, seed=7)


@pytest.fixture(scope="module")
def sequences(toy):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, toy.vocab, (6, 16), generator=g).tolist()


def toy_logprobs(toy):
    def logprobs(pattern, ids):
        return (-token_losses(toy, pattern, torch.tensor([ids]))[0]).tolist()

    return logprobs


@pytest.fixture
def server(toy):
    fake = FakeServer(num_layers=LAYERS, logprobs=toy_logprobs(toy), admin_api_key="key")
    url = fake.start()
    yield fake, url
    fake.stop()


def test_server_search_equals_in_process_search(server, toy, sequences):
    fake, url = server
    scorer = ServerScorer(url, "key", sequences, LAYERS, batch_size=4)
    remote = greedy_search(scorer, 2)
    local = greedy_search(TorchScorer(toy, [torch.tensor(sequences[:4]), torch.tensor(sequences[4:])]), 2)
    assert remote.order == local.order
    assert remote.loss == pytest.approx(local.loss, abs=1e-6)
    # One switch and one scoring pass of every sequence per map; the winner's score is reused, not re-run.
    assert scorer.evaluations == 1 + remote.evaluations == len(fake.switches)
    assert len(fake.scored) == len(sequences) * scorer.evaluations
    # Every prompt was scored under the map just switched to, and none met a prefix cached under another map.
    assert fake.stale_hits == 0 and fake.flushes >= scorer.evaluations


def test_without_the_flush_a_stale_prefix_would_be_met(server, sequences, monkeypatch):
    fake, url = server
    scorer = ServerScorer(url, "key", sequences, LAYERS)
    monkeypatch.setattr(scorer, "_post", _skipping_flush(scorer._post))
    scorer.start("F" * LAYERS)
    scorer.candidate_loss(3)
    assert fake.stale_hits > 0  # so the check in the test above can fail


def _skipping_flush(post):
    def wrapped(path, body):
        return b"" if path == "/flush_cache" else post(path, body)

    return wrapped


def test_refuses_a_server_started_with_shared_layers(toy, sequences):
    fake = FakeServer(num_layers=LAYERS, startup_pattern="FFSFFFFF", logprobs=toy_logprobs(toy))
    url = fake.start()
    try:
        with pytest.raises(InputError, match=r"started with layers \[2\] Shared"):
            ServerScorer(url, "key", sequences, LAYERS).check()
    finally:
        fake.stop()


def test_refuses_another_layer_count(server, sequences):
    _, url = server
    with pytest.raises(InputError, match="serves 8 layers but the model has 6"):
        ServerScorer(url, "key", sequences, 6).check()


def test_a_wrong_admin_key_is_bad_input(server, sequences):
    _, url = server
    with pytest.raises(InputError, match="HTTP 401"):
        ServerScorer(url, "wrong", sequences, LAYERS).check()


def test_unreachable_server_is_bad_input(sequences):
    with pytest.raises(InputError, match="cannot be reached"):
        ServerScorer("http://127.0.0.1:9", "key", sequences, LAYERS).check()


def test_survives_a_server_restart_mid_search(toy, sequences):
    reference = FakeServer(num_layers=LAYERS, logprobs=toy_logprobs(toy), admin_api_key="key")
    url = reference.start()
    try:
        expected = greedy_search(ServerScorer(url, "key", sequences, LAYERS), 2)
    finally:
        reference.stop()

    first = FakeServer(num_layers=LAYERS, logprobs=toy_logprobs(toy), admin_api_key="key")
    url = first.start()
    second = FakeServer(num_layers=LAYERS, logprobs=toy_logprobs(toy), port=first.port, admin_api_key="key")

    def restart_after_some_maps():
        while len(first.switches) < 10:
            time.sleep(0.01)
        first.stop()
        time.sleep(0.5)
        second.start()

    thread = threading.Thread(target=restart_after_some_maps)
    thread.start()
    try:
        # A request the dying server accepted but never answers counts as the server gone, not as a hang.
        scorer = ServerScorer(url, "key", sequences, LAYERS, poll_s=0.1, wait_s=30, timeout_s=10)
        state = greedy_search(scorer, 2)
    finally:
        thread.join()
        second.stop()
    assert scorer.restarts == 1 and second.switches
    assert state.order == expected.order and state.loss == pytest.approx(expected.loss)


def test_gives_up_when_the_server_stays_away(server, sequences):
    fake, url = server
    scorer = ServerScorer(url, "key", sequences, LAYERS, poll_s=0.05, wait_s=0.3)
    scorer.start("F" * LAYERS)
    fake.stop()
    with pytest.raises(ServerGone, match="--resume"):
        scorer.candidate_loss(1)
    fake.start()  # for the fixture's stop
