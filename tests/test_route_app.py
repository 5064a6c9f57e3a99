"""The router's HTTP app against a fake vLLM (what vLLM answers, including its errors): the
router and engine never stay out of step (a restarted engine, a restarted router, a load that
finished after the router gave up), the disk holds only what is loaded, a request served by a
cached adapter or the base never waits behind another's composition or a removal, replicas
share their named adaptations, and the OpenAI-facing details (the asked model echoed, 504 on
a timeout, /health). The real engine is in test_route_vllm.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from models import make_adapter, make_llama

from loradb.db.access import create_token
from loradb.db.database import LoraDB
from loradb.route.adaptations import Adaptations
from loradb.route.app import MAX_ADAPTATION_TEXTS, Router, create_app
from loradb.route.engine import Engine, EngineLimits
from loradb.route.plan import Part, Plan

TEXTS = {
    "cooking": ["bake the bread in the oven", "stir the soup and add salt", "chop garlic and onion for the sauce"],
    "finance": ["the stock market fell", "interest rates rise again", "the bank posted a profit"],
    "sports": ["the team won the final", "the coach was fired after the loss", "he scored a goal in the match"],
}


class FakeVLLM:
    """vLLM's OpenAI server with runtime LoRA loading, as far as the router sees it."""

    def __init__(self, base: Path):
        self.base = str(base)
        self.loaded: dict[str, str] = {}  # name -> path
        self.loads = 0
        self.down = False
        self.slow: set[str] = set()  # paths that time out

    def restart(self) -> None:
        self.loaded.clear()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused")
        body = json.loads(request.content or b"{}")
        path = request.url.path
        if path in self.slow:
            raise httpx.ReadTimeout("timed out")
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "base", "root": self.base}]
                                             + [{"id": n, "root": p, "parent": "base"} for n, p in self.loaded.items()]})
        if path == "/v1/load_lora_adapter":
            name = body["lora_name"]
            if name in self.loaded:
                return httpx.Response(400, json={"error": {"message": f"The lora adapter '{name}' has already been loaded.",
                                                           "type": "InvalidUserInput", "code": 400}})
            assert (Path(body["lora_path"]) / "adapter_model.safetensors").is_file(), "loaded from a missing folder"
            self.loaded[name] = body["lora_path"]
            self.loads += 1
            return httpx.Response(200, text="Success")
        if path == "/v1/unload_lora_adapter":
            name = body["lora_name"]
            if self.loaded.pop(name, None) is None:
                return httpx.Response(404, json={"error": {"message": f"The lora adapter '{name}' cannot be found.",
                                                           "type": "NotFoundError", "code": 404}})
            return httpx.Response(200, text="Success")
        if path in ("/v1/completions", "/v1/chat/completions"):
            model = body["model"]
            if model != "base" and model not in self.loaded:
                return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist.",
                                                           "type": "NotFoundError", "code": 404}})
            if model != "base":
                assert Path(self.loaded[model]).is_dir(), "the router deleted a folder the engine holds"
            return httpx.Response(200, json={"id": "c", "object": "text_completion", "model": model,
                                             "choices": [{"text": "ok", "index": 0}], "usage": {"total_tokens": 1}})
        return httpx.Response(404, json={"detail": "Not Found"})


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A tiny causal base and a database of three adapters on it, with a read and a write token."""
    root = tmp_path_factory.mktemp("route-app")
    base = make_llama(root / "llama")
    db = root / "db"
    with LoraDB.init(db) as opened:
        for i, (domain, texts) in enumerate(TEXTS.items()):
            adapter = make_adapter(base, root / f"ad-{domain}", seed=i, r=4, targets=("q_proj", "v_proj"))
            data = root / f"{domain}.jsonl"
            data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            opened.add(adapter, data=data, name=domain, base=base, progress=False)
        TOKENS.update({scope: create_token(opened, f"{scope}-holder", scope)[0] for scope in ("read", "write")})
    return base, db


TOKENS: dict[str, str] = {}


def bearer(scope: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[scope]}"}


async def started(fake: FakeVLLM, base: Path, db: Path, state: Path, *, max_loras: int = 2):
    router = Router(str(db), engine_url="http://engine", base=str(base), limits=EngineLimits(max_loras, 64), state=state)
    engine = Engine("http://engine", client=httpx.AsyncClient(base_url="http://engine",
                                                               transport=httpx.MockTransport(fake.handle)))
    router.engine = router.loaded.engine = engine
    await router.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(router)), base_url="http://router")
    return router, client


def routed(library, state: Path, scenario, **limits) -> FakeVLLM:
    """Run `scenario(router, client, fake)` against a started router and a fake engine."""
    base, db = library
    fake = FakeVLLM(base)

    async def run():
        router, client = await started(fake, base, db, state, **limits)
        try:
            await scenario(router, client, fake)
        finally:
            await router.close()

    asyncio.run(run())
    return fake


def completion(model: str, **extra) -> dict:
    return {"model": model, "prompt": "hello", "max_tokens": 4, **extra}


def compositions(state: Path) -> list[str]:
    folders = list((state / "compositions").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("_engine")  # this host's and engine's folder
    return sorted(p.name for p in folders[0].iterdir())


def test_a_restarted_engine_or_router_never_leaves_them_out_of_step(library, tmp_path):
    base, db = library
    fake = FakeVLLM(base)

    async def run():
        router, client = await started(fake, base, db, tmp_path / "state")
        answer = await client.post("/v1/completions", json=completion("finance"))
        assert answer.status_code == 200 and answer.json()["model"] == "finance"  # as asked; the adapter in `loradb`
        adapter = answer.json()["loradb"]["adapter"]
        assert list(fake.loaded) == [adapter]

        fake.restart()  # the engine restarted: it holds nothing, the router still counts the adapter loaded
        answer = await client.post("/v1/completions", json=completion("finance"))
        assert answer.status_code == 200 and list(fake.loaded) == [adapter]  # loaded again, once
        fake.restart()  # again, before a streamed request: its refusal comes before any event, so it goes again too
        loads = fake.loads
        answer = await client.post("/v1/completions", json=completion("finance", stream=True))
        assert answer.status_code == 200 and list(fake.loaded) == [adapter] and fake.loads == loads + 1

        # a second router on the same engine and state (the first one restarted): it finds the
        # first one's adapter in the engine, unloads it and deletes its folder, then serves
        await router.close()
        router, client = await started(fake, base, db, tmp_path / "state")
        assert fake.loaded == {} and compositions(tmp_path / "state") == []
        answer = await client.post("/v1/completions", json=completion("finance"))
        assert answer.status_code == 200 and list(fake.loaded) == [adapter]

        # a load that finished in the engine after the router stopped waiting: "already loaded" is loaded
        await router.loaded.forget(adapter, router.loaded.load_of(adapter))
        answer = await client.post("/v1/completions", json=completion("finance"))
        assert answer.status_code == 200 and answer.json()["loradb"]["cached"] is False
        await router.close()

    asyncio.run(run())


def test_the_disk_holds_only_what_the_engine_holds(library, tmp_path):
    async def scenario(router, client, fake):
        for model in ("finance", "cooking", "sports", "finance"):
            answer = await client.post("/v1/completions", json=completion(model))
            assert answer.status_code == 200
            assert len(fake.loaded) == 1 and set(router.plans) == set(fake.loaded)
            key = router.plans[answer.json()["loradb"]["adapter"]].key
            assert compositions(tmp_path / "state") == [key]  # the evicted ones deleted

    routed(library, tmp_path / "state", scenario, max_loras=1)


def test_cached_and_base_requests_do_not_wait_behind_the_worker_or_a_removal(library, tmp_path):
    base, shared = library
    db = shutil.copytree(shared, tmp_path / "db")  # this test removes a record

    async def scenario(router, client, fake):
        assert (await client.post("/v1/completions", json=completion("cooking"))).status_code == 200
        release = threading.Event()
        busy = asyncio.get_running_loop().run_in_executor(router.worker, release.wait)  # a long composition
        try:
            for model in ("cooking", "base"):  # a cached adapter, the base model (a new composition would wait)
                answer = await asyncio.wait_for(client.post("/v1/completions", json=completion(model)), 30)
                assert answer.status_code == 200
            models = await asyncio.wait_for(client.get("/v1/models"), 30)
            assert models.status_code == 200 and all("created" in m for m in models.json()["data"])
        finally:
            release.set()
            await busy

        # a removed record whose adapter a request is still using: other requests go on meanwhile
        sports = Plan(parts=(Part(*_record(db, "sports"), 1.0),), chosen_by="record")
        async with router.loaded.use(sports):
            with LoraDB(db) as opened:
                opened.remove("sports")
            answer = await asyncio.wait_for(client.post("/v1/completions", json=completion("base")), 30)
            assert answer.status_code == 200 and sports.engine_name in fake.loaded  # still in use: still loaded
            assert (await client.post("/v1/completions", json=completion("sports"))).status_code == 404
        for _ in range(100):  # unloaded in the background once its last user is done
            if sports.engine_name not in fake.loaded:
                break
            await asyncio.sleep(0.05)
        assert sports.engine_name not in fake.loaded and sports.key not in compositions(tmp_path / "state")

    routed((base, db), tmp_path / "state", scenario)


def _record(db: Path, name: str) -> tuple[str, str]:
    with LoraDB(db) as opened:
        record = opened.get(name)
    return record.id, record.name


def test_replicas_sharing_a_state_folder_share_their_adaptations(tmp_path, monkeypatch):
    plan = Plan(parts=(Part("id-a", "a", 1.0),), chosen_by="adaptation")
    one, two = Adaptations(tmp_path / "adaptations.json"), Adaptations(tmp_path / "adaptations.json")
    one.add("site-a", plan, n_texts=3)
    assert two.get("site-a") is not None  # the other replica reads the change
    two.add("site-b", plan, n_texts=3)
    assert one.names() == two.names() == ["site-a", "site-b"]  # neither write erased the other's
    one.remove("site-b")
    assert two.names() == ["site-a"]

    # at the same moment: one replica is writing (slowly) when the other changes the file too
    from loradb.route import adaptations as module

    writing, written = threading.Event(), threading.Event()
    real_write = module.atomic_write_text

    def slow_write(path, text):
        if "site-c" in text and "site-d" not in text:
            writing.set()
            written.wait(2)  # the other replica tries its change meanwhile (it must wait for the lock)
        return real_write(path, text)

    monkeypatch.setattr(module, "atomic_write_text", slow_write)
    first = threading.Thread(target=one.add, args=("site-c", plan), kwargs={"n_texts": 1})
    first.start()
    assert writing.wait(5)
    second = threading.Thread(target=two.add, args=("site-d", plan), kwargs={"n_texts": 1})
    second.start()
    second.join(0.5)
    assert second.is_alive()  # held by the lock while the first replica writes
    written.set()
    first.join(5)
    second.join(5)
    assert Adaptations(tmp_path / "adaptations.json").names() == ["site-a", "site-c", "site-d"]


def test_tokens_limits_timeouts_and_health(library, tmp_path):
    async def scenario(router, client, fake):
        # making or removing an adaptation needs a write token of the database; serving by it does not
        sample = {"name": "site", "texts": TEXTS["finance"], "k": 1}
        assert (await client.post("/v1/adaptations", json=sample)).status_code == 401
        assert (await client.post("/v1/adaptations", json=sample, headers={"Authorization": "Bearer ldb_nope"})).status_code == 401
        assert (await client.post("/v1/adaptations", json=sample, headers=bearer("read"))).status_code == 403
        assert router.adaptations.names() == []
        made = await client.post("/v1/adaptations", json=sample, headers=bearer("write"))
        assert made.status_code == 201 and [p["name"] for p in made.json()["loradb"]["records"]] == ["finance"]
        assert (await client.post("/v1/completions", json=completion("site"))).status_code == 200
        assert (await client.delete("/v1/adaptations/site")).status_code == 401
        assert (await client.delete("/v1/adaptations/site", headers=bearer("write"))).status_code == 200

        too_many = {"name": "big", "texts": ["some text"] * (MAX_ADAPTATION_TEXTS + 1)}
        answer = await client.post("/v1/adaptations", json=too_many, headers=bearer("write"))
        assert answer.status_code == 413 and f"at most {MAX_ADAPTATION_TEXTS}" in answer.json()["error"]["message"]
        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        fake.slow.add("/v1/completions")
        answer = await client.post("/v1/completions", json=completion("base"))
        assert answer.status_code == 504 and answer.json()["error"]["type"] == "engine_timeout"
        fake.down = True
        health = await client.get("/health")
        assert health.status_code == 503 and "cannot be reached" in health.json()["error"]["message"]
        fake.down = False

    routed(library, tmp_path / "state", scenario)
