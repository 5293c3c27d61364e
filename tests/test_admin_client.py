"""The admin client and `sglang-indexcache switch/status` against a loopback server answering as SGLang's does."""

import asyncio
import json
import socket
import subprocess
import sys
import threading

import pytest
from aiohttp import web

from sglang_indexcache.admin import AdminError, status, switch_map

KEY = "k"


@pytest.fixture
def server():
    seen = []

    async def switch(request):
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        body = await request.json()
        seen.append(body)
        if body.get("index_topk_pattern") == "FFSSSSSS":
            return web.json_response({"error": "POST /indexcache/map: pattern: layers [1] are Full ..."}, status=400)
        pattern = body.get("index_topk_pattern", "FSSSFSSS")
        state = {"pattern": pattern, "full_layers": pattern.count("F"), "num_layers": len(pattern)}
        return web.json_response({"switched": True, "pattern": pattern, "dp_ranks": [state, state]})

    async def get_status(request):
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({"dp_ranks": [{"pattern": "FSFSFSFS"}]})

    app = web.Application()
    app.add_routes([web.post("/indexcache/map", switch), web.get("/indexcache", get_status)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{port}", seen
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_client_sends_map_or_schedule_keys(server):
    url, seen = server
    switch_map(url, KEY, "glm-5/uniform-1of4")
    answer = switch_map(url, KEY, index_topk_freq=4, index_skip_topk_offset=3, index_topk_pattern=None)
    assert seen == [{"map": "glm-5/uniform-1of4"}, {"index_topk_freq": 4, "index_skip_topk_offset": 3}]
    assert answer["switched"] and len(answer["dp_ranks"]) == 2
    assert status(url, KEY) == [{"pattern": "FSFSFSFS"}]


def test_client_raises_the_servers_error(server):
    url, _ = server
    with pytest.raises(AdminError) as err:
        switch_map(url, KEY, index_topk_pattern="FFSSSSSS")
    assert err.value.status == 400 and "layers [1]" in str(err.value)
    with pytest.raises(AdminError) as err:
        status(url, "wrong")
    assert err.value.status == 401


def cli(*args, key=KEY):
    env = {"SGLANG_INDEXCACHE_ADMIN_API_KEY": key, "PATH": ""}
    return subprocess.run([sys.executable, "-m", "sglang_indexcache", *args], capture_output=True, text=True,
                          env=env, check=False)


def test_cli_switch_and_status(server):
    url, seen = server
    done = cli("switch", "--pattern", "FSSSFSSS", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["dp rank 0: FSSSFSSS (2/8 Full)", "dp rank 1: FSSSFSSS (2/8 Full)"]
    assert seen[-1] == {"index_topk_pattern": "FSSSFSSS"}
    bad = cli("switch", "--pattern", "FFSSSSSS", "--url", url)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "layers [1]" in bad.stderr
    assert json.loads(cli("status", "--url", url).stdout) == [{"pattern": "FSFSFSFS"}]
    assert cli("status", "--url", url, key="wrong").returncode == 1
    unreachable = cli("status", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
