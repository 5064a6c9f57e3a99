"""The router's engine bookkeeping against a scripted engine (no vLLM): the loaded set stays
within max_loras, evicts the least recently used idle adapter, never one in use, composes and
loads an adapter once for two identical cold requests, and shares a failed load's error.
The real engine is in test_route_vllm.py."""

import asyncio
import json

import httpx
import pytest

from loradb.errors import LoradbError
from loradb.route.engine import Engine, EngineDown, EngineRefused
from loradb.route.loaded import LoadedSet
from loradb.route.plan import Part, Plan
from loradb.route.prompts import request_texts


class ScriptedEngine:
    """What a vLLM server with runtime LoRA loading answers, and a log of what it was asked."""

    def __init__(self, *, load_delay: float = 0.0, refuse: set[str] = frozenset(), refuse_unload: bool = False):
        self.loaded: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self.load_delay = load_delay
        self.refuse = refuse
        self.refuse_unload = refuse_unload  # answer 500 to unloads (the adapter stays)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        if path == "/v1/load_lora_adapter":
            self.calls.append(("load", body["lora_name"]))
            await asyncio.sleep(self.load_delay)
            if body["lora_name"] in self.refuse:
                return httpx.Response(400, json={"error": {"message": "bad adapter", "type": "BadRequestError"}})
            assert body["lora_name"] not in self.loaded, "loaded twice"
            self.loaded.append(body["lora_name"])
            return httpx.Response(200, text="Success")
        if path == "/v1/unload_lora_adapter":
            self.calls.append(("unload", body["lora_name"]))
            if self.refuse_unload:
                return httpx.Response(500, json={"error": {"message": "internal error", "type": "InternalServerError"}})
            self.loaded.remove(body["lora_name"])
            return httpx.Response(200, text="Success")
        if path == "/v1/completions":
            assert body["model"] in self.loaded, f"{body['model']} used while not loaded"
            return httpx.Response(200, json={"choices": [{"text": f"from {body['model']}"}]})
        return httpx.Response(404, json={"detail": "Not Found"})

    def engine(self) -> Engine:
        return Engine("http://engine", client=httpx.AsyncClient(base_url="http://engine",
                                                                 transport=httpx.MockTransport(self.handle)))


def plan(name: str, weight: float = 1.0) -> Plan:
    return Plan(parts=(Part(record_id=f"id-{name}", name=name, weight=weight),))


async def served(loaded: LoadedSet, p: Plan) -> None:
    """One request served by the plan's adapter: held loaded, then let go."""
    async with loaded.use(p):
        pass


def loaded_set(scripted: ScriptedEngine, max_loras: int, composed: list | None = None,
               discarded: list | None = None, unloaded: list | None = None) -> LoadedSet:
    async def compose(p: Plan):
        if composed is not None:
            composed.append(p.key)
        await asyncio.sleep(0.01)
        return f"/compositions/{p.key}"

    async def discard(p: Plan):
        if discarded is not None:
            discarded.append(p.key)

    async def forget_composition(name: str):
        if unloaded is not None:
            unloaded.append((name, list(scripted.loaded)))  # what the engine held when the folder went

    return LoadedSet(scripted.engine(), max_loras, compose, discard, forget_composition)


def test_the_least_recently_used_idle_adapter_is_evicted_and_the_engine_never_holds_more_than_max_loras():
    scripted = ScriptedEngine()

    async def run():
        loaded = loaded_set(scripted, max_loras=2)
        a, b, c = plan("a"), plan("b"), plan("c")
        for p in (a, b, a):  # a used last: b is the least recently used
            async with loaded.use(p) as hit:
                pass
        assert hit is True  # a again: already loaded
        async with loaded.use(c):
            assert sorted(scripted.loaded) == sorted([a.engine_name, c.engine_name])
        assert ("unload", b.engine_name) in scripted.calls and ("unload", a.engine_name) not in scripted.calls
        return loaded.loads

    assert asyncio.run(run()) == 3


def test_an_adapter_in_use_is_never_unloaded_a_request_waits_for_a_free_slot():
    scripted = ScriptedEngine()

    async def run():
        loaded = loaded_set(scripted, max_loras=1)
        a, b = plan("a"), plan("b")
        order = []

        async def hold_a():
            async with loaded.use(a):
                order.append("a in use")
                await asyncio.sleep(0.2)
                r = await loaded.engine.post("/v1/completions", {"model": a.engine_name})  # still loaded
                order.append(r["choices"][0]["text"])

        async def then_b():
            await asyncio.sleep(0.05)
            async with loaded.use(b):
                order.append("b in use")

        await asyncio.gather(hold_a(), then_b())
        return order

    assert asyncio.run(run()) == ["a in use", f"from {plan('a').engine_name}", "b in use"]
    assert scripted.loaded == [plan("b").engine_name]


def test_two_identical_cold_requests_compose_and_load_once():
    scripted = ScriptedEngine(load_delay=0.2)
    composed: list = []

    async def run():
        loaded = loaded_set(scripted, max_loras=4, composed=composed)
        p = plan("a", 0.5)
        hits = []

        async def request():
            async with loaded.use(p) as hit:
                hits.append(hit)

        await asyncio.gather(request(), request(), request())
        return hits

    hits = asyncio.run(run())
    assert [c for c in scripted.calls if c[0] == "load"] == [("load", plan("a", 0.5).engine_name)]
    assert len(composed) == 1 and sorted(hits) == [False, True, True]


def test_a_failed_load_is_every_waiters_error_and_leaves_nothing_loaded():
    refused = plan("bad")
    scripted = ScriptedEngine(load_delay=0.1, refuse={refused.engine_name})

    discarded: list = []

    async def run():
        loaded = loaded_set(scripted, max_loras=2, discarded=discarded)

        results = await asyncio.gather(served(loaded, refused), served(loaded, refused), return_exceptions=True)
        return results, loaded.names

    results, names = asyncio.run(run())
    assert all(isinstance(r, EngineRefused) and "bad adapter" in str(r) for r in results)
    assert names == [] and scripted.loaded == [] and discarded == [refused.key]  # its composition forgotten too
    assert [c for c in scripted.calls if c[0] == "load"] == [("load", refused.engine_name)]  # shared, not retried


def test_forgetting_an_adapter_the_engine_lost_keeps_the_count_of_its_newer_load():
    """Two requests meet a restarted engine's 404: the first forgets and reloads; the second,
    forgetting the load it held, must not erase the count of the first's new load."""
    scripted = ScriptedEngine()
    a = plan("a")

    async def run():
        loaded = loaded_set(scripted, max_loras=2)
        async with loaded.use(a):
            old = loaded.load_of(a.engine_name)
        scripted.loaded.clear()  # the engine restarted
        await loaded.forget(a.engine_name, old)  # the first request
        async with loaded.use(a) as hit:  # loads it again and holds it
            assert hit is False
            await loaded.forget(a.engine_name, old)  # the second request, late, with the old load
            assert loaded._loaded[a.engine_name] == 1  # still counted as in use: never evicted under the first

    asyncio.run(run())


def test_a_drop_waits_for_a_load_in_progress_and_deletes_only_what_the_engine_let_go():
    slow, kept = plan("slow"), plan("kept")
    scripted = ScriptedEngine(load_delay=0.2)
    unloaded: list = []

    async def run():
        loaded = loaded_set(scripted, max_loras=2, unloaded=unloaded)

        serving = asyncio.create_task(served(loaded, slow))
        await asyncio.sleep(0.05)  # its load is in progress (composed, the engine reading the folder)
        gone = await loaded.drop({slow.engine_name})
        await serving
        assert gone == {slow.engine_name} and scripted.loaded == []
        assert unloaded == [(slow.engine_name, [])]  # its folder went after the engine had loaded and unloaded it

        async with loaded.use(kept):
            pass
        scripted.refuse_unload = True  # the engine will not let it go: it keeps it, and its folder stays
        gone = await loaded.drop({kept.engine_name})
        assert gone == set() and loaded.names == [kept.engine_name] and scripted.loaded == [kept.engine_name]
        assert [name for name, _ in unloaded] == [slow.engine_name]

    asyncio.run(run())


def test_an_engine_that_is_down_is_engine_down_with_the_cause():
    async def run():
        engine = Engine("http://127.0.0.1:9")  # discard port: nothing listens
        try:
            await engine.models()
        finally:
            await engine.close()

    with pytest.raises(EngineDown, match="cannot be reached"):
        asyncio.run(run())


def test_plans_share_a_composition_only_for_the_same_records_weights_and_spec():
    from loradb.lora.merges import MergeSpec

    a = Plan(parts=(Part("r1", "x", 0.5), Part("r2", "y", 0.5)))
    assert a.key == Plan(parts=(Part("r1", "renamed", 0.5), Part("r2", "y", 0.5)), chosen_by="auto").key
    assert a.key != Plan(parts=(Part("r1", "x", 0.5), Part("r2", "y", 0.5000001))).key
    assert a.key != Plan(parts=a.parts, spec=MergeSpec(rank=8)).key
    assert Plan(parts=(Part("r", "é,=", 1.0),)).header() == "%C3%A9%2C%3D=1"  # a header is Latin-1


def test_request_texts_of_completions_and_chats():
    assert request_texts({"prompt": "a"}) == ["a"]
    assert request_texts({"prompt": ["a", " ", "b"]}) == ["a", "b"]
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
                         {"role": "user", "content": [{"type": "text", "text": "again"}, {"type": "image_url"}]}]}
    assert request_texts(chat) == ["hello", "again"]
    for bad in ({"prompt": [1, 2]}, {"prompt": ""}, {}, {"messages": [{"role": "system", "content": "x"}]}):
        with pytest.raises(LoradbError):
            request_texts(bad)
