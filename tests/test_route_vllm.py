"""`loradb route` in front of a real vLLM engine (from `make engine`'s environment) serving the
packaged SmolLM2 in float32, with three planted adapters trained, in effect, on code, news
and Spanish UI strings. The router must pick the code adapter for a code prompt, generate
exactly what vLLM does with the same composition loaded by name, cache and stream, keep the
engine within its limits, and refuse bad input with nothing left loaded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from models import make_adapter
from safetensors.numpy import load_file
from server_helpers import start_server, stop_server
from services import free_port

from loradb.db.access import create_token
from loradb.db.database import LoraDB
from loradb.models.packaged import packaged_smollm2
from loradb.route.engine import EngineLimits
from loradb.route.launch import start_engine

LIMITS = EngineLimits(max_loras=2, max_lora_rank=16)  # rank-8 adapters: k=2 fits exactly, k=3 is compressed
DOMAINS = {
    "code": ["def add(a, b):\n    return a + b", "for i in range(10):\n    print(i)", "import numpy as np\nx = np.zeros(3)",
             "class Stack:\n    def push(self, item):\n        self.items.append(item)"],
    "news": ["Stocks fell sharply on Monday as investors worried about interest rates.",
             "The president met foreign leaders at the summit in Geneva.", "Floods displaced thousands in the region overnight.",
             "The central bank held rates steady, citing slowing inflation."],
    "spanish": ["Guardar cambios", "Configuración de la cuenta", "Cerrar sesión", "Buscar en el sitio"],
}
CODE_PROMPT = "def multiply(a, b):\n    result = a * b"
SAMPLING = {"max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    return packaged_smollm2(tmp_path_factory.getbasetemp() / "loradb-cache")


@pytest.fixture(scope="module")
def db_path(smollm2, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("route-db")
    db = LoraDB.init(root / "db")
    for seed, (name, texts) in enumerate(DOMAINS.items(), start=1):
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        adapter = make_adapter(smollm2, root / f"adapter-{name}", seed=seed, r=8, alpha=16, targets=("q_proj", "v_proj"))
        db.add(adapter, data=data, name=name, base=smollm2, progress=False)
    db.close()
    return root / "db"


@pytest.fixture(scope="module")
def engine(smollm2, tmp_path_factory):
    started = start_engine(smollm2, port=free_port(), limits=LIMITS, log=tmp_path_factory.mktemp("engine") / "engine.log")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def router(db_path, smollm2, engine, tmp_path_factory):
    state = tmp_path_factory.mktemp("route-state")
    # ready once it has checked the engine and loaded its encoder
    proc, url = start_server(db_path, "--base", smollm2, "--engine", engine.url, "--max-loras", LIMITS.max_loras,
                             "--max-lora-rank", LIMITS.max_lora_rank, "--state", state, log=state / "router.log",
                             command="route", ready="/v1/models", timeout=120)
    client = httpx.Client(base_url=url, timeout=300)
    with LoraDB(db_path) as db:  # making an adaptation needs a write token of the database
        writer = {"Authorization": f"Bearer {create_token(db, 'route-tests', 'write')[0]}"}
    yield {"client": client, "state": state, "engine": engine, "db": db_path, "writer": writer}
    client.close()
    stop_server(proc)


def complete(client: httpx.Client, model: str, prompt: str = CODE_PROMPT, **extra) -> httpx.Response:
    return client.post("/v1/completions", json={"model": model, "prompt": prompt, **SAMPLING, **extra})


def engine_models(engine) -> list[str]:
    return [m["id"] for m in httpx.get(f"{engine.url}/v1/models", timeout=30).json()["data"]]


def engine_text(engine, model: str, prompt: str = CODE_PROMPT) -> str:
    r = httpx.post(f"{engine.url}/v1/completions", json={"model": model, "prompt": prompt, **SAMPLING}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_auto_picks_the_code_adapter_and_generates_what_vllm_does_with_the_same_composition(router, tmp_path):
    client, engine = router["client"], router["engine"]
    r = complete(client, "loradb:auto", loradb={"k": 2})
    assert r.status_code == 200, r.text
    served = r.json()["loradb"]
    weights = {p["name"]: p["weight"] for p in served["records"]}
    assert next(iter(weights)) == "code" and weights["code"] > max(w for n, w in weights.items() if n != "code") + 0.1, weights
    assert r.headers["X-Loradb-Adapters"].startswith("code=")
    text = r.json()["choices"][0]["text"]

    # the composition equals `loradb compose` of the same records and weights...
    with LoraDB(router["db"]) as db:
        db.compose(tmp_path / "composed", weights={p["id"]: p["weight"] for p in served["records"]}, progress=False)
    ours = load_file(str(next((router["state"] / "compositions").glob("*/*/adapter_model.safetensors"))))  # engine/key/
    theirs = load_file(str(tmp_path / "composed" / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    # ... and vLLM called directly with it, loaded by name, writes the same text
    loaded = httpx.post(f"{engine.url}/v1/load_lora_adapter", json={"lora_name": "direct", "lora_path": str(tmp_path / "composed")},
                        timeout=60)
    assert loaded.status_code == 200, loaded.text
    try:
        assert engine_text(engine, "direct") == text
    finally:
        httpx.post(f"{engine.url}/v1/unload_lora_adapter", json={"lora_name": "direct"}, timeout=60)
    base = engine_models(engine)[0]
    assert engine_text(engine, base) != text  # the adapter changed what the model writes


def test_a_repeated_request_is_a_cache_hit_and_streaming_gives_the_same_text(router):
    client, engine = router["client"], router["engine"]
    first = complete(client, "loradb:auto", loradb={"k": 2}).json()
    again = complete(client, "loradb:auto", loradb={"k": 2}).json()
    assert again["loradb"]["cached"] is True and again["loradb"]["adapter"] == first["loradb"]["adapter"]
    assert engine_models(engine).count(first["loradb"]["adapter"]) == 1
    with client.stream("POST", "/v1/completions", json={"model": "loradb:auto", "prompt": CODE_PROMPT, "stream": True,
                                                          "loradb": {"k": 2}, **SAMPLING}) as r:
        assert r.status_code == 200 and r.headers["X-Loradb-Adapters"].startswith("code=")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == first["choices"][0]["text"]


def test_a_composition_over_the_engines_rank_is_compressed_to_it_and_the_set_stays_within_max_loras(router):
    client, engine = router["client"], router["engine"]
    r = complete(client, "loradb:auto", loradb={"k": 3})
    assert r.status_code == 200, r.text
    served = r.json()["loradb"]
    assert served["merge"]["rank"] == LIMITS.max_lora_rank and served["compressed"]["stacked_rank"] == 24
    news = complete(client, "news")  # a record by name: that adapter alone
    assert news.status_code == 200 and news.headers["X-Loradb-Adapters"] == "news=1"
    adapters = [m for m in engine_models(engine) if m.startswith("loradb-")]
    assert len(adapters) <= LIMITS.max_loras and news.json()["loradb"]["adapter"] in adapters


def test_represent_names_the_data_inside_a_prompt_that_wraps_it(router):
    def chat(**options):
        return router["client"].post("/v1/chat/completions", json={
            "model": "loradb:auto", "messages": [{"role": "user", "content": CODE_PROMPT}], **SAMPLING,
            "loradb": {"k": 1, **options}})

    assert chat().headers["X-Loradb-Adapters"] == "code=1"  # the user's message itself
    r = chat(represent="Configuración de la cuenta")
    assert r.status_code == 200, r.text
    assert r.headers["X-Loradb-Adapters"] == "spanish=1" and r.json()["choices"][0]["message"]["content"]


def test_a_named_adaptation_is_made_once_and_served_by_name(router):
    client, writer = router["client"], router["writer"]
    made = client.post("/v1/adaptations", json={"name": "shop-es", "texts": ["Añadir al carrito", "Ver pedido", "Pagar ahora"],
                                                "k": 1}, headers=writer)
    assert made.status_code == 201, made.text
    assert [p["name"] for p in made.json()["loradb"]["records"]] == ["spanish"]
    assert client.post("/v1/adaptations", json={"name": "shop-es", "texts": ["x"]}, headers=writer).status_code == 409
    r = complete(client, "shop-es", prompt="Guardar")
    assert r.status_code == 200 and r.headers["X-Loradb-Adapters"] == "spanish=1"
    assert "shop-es" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert client.delete("/v1/adaptations/shop-es").status_code == 401  # without the token: refused
    assert client.delete("/v1/adaptations/shop-es", headers=writer).status_code == 200
    assert complete(client, "shop-es").status_code == 404


def test_bad_requests_get_one_clear_error_and_load_nothing(router):
    client, engine = router["client"], router["engine"]
    before = engine_models(engine)
    cases = [
        (complete(client, "no-such-adapter"), 404, "unknown model 'no-such-adapter'"),
        (complete(client, "news", loradb={"k": 2}), 400, "apply to loradb:auto only"),
        (complete(client, "loradb:auto", loradb={"k": 0}), 400, "k must be a whole number"),
        (complete(client, "loradb:auto", loradb={"colour": "red"}), 400, "unknown loradb option(s) colour"),
        (complete(client, "loradb:auto", loradb={"represent": []}), 400, "option represent must be"),
        (complete(client, "loradb:auto", prompt=[1, 2, 3]), 400, "token ids"),
        (client.post("/v1/completions", content=b"{not json"), 400, "not valid JSON"),
        (client.post("/v1/adaptations", json={"name": "loradb:auto", "texts": ["x"]}, headers=router["writer"]), 400,
         "reserved"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
    assert engine_models(engine) == before


def test_removing_a_record_unloads_and_forgets_every_composition_that_used_it(router):
    client, engine = router["client"], router["engine"]
    used = complete(client, "loradb:auto", loradb={"k": 2}).json()["loradb"]
    assert used["records"][0]["name"] == "code" and used["adapter"] in engine_models(engine)
    with LoraDB(router["db"]) as db:
        db.remove("code")
    after = complete(client, "loradb:auto", loradb={"k": 2})
    assert after.status_code == 200 and "code" not in [p["name"] for p in after.json()["loradb"]["records"]]
    for _ in range(100):  # unloaded in the background, once no request uses it
        if used["adapter"] not in engine_models(engine):
            break
        time.sleep(0.1)
    assert used["adapter"] not in engine_models(engine)
    key_prefix = used["adapter"].removeprefix("loradb-")
    assert not [d for d in (router["state"] / "compositions").glob("*/*") if d.name.startswith(key_prefix)]


def test_an_engine_that_went_down_is_a_503_with_the_cause(router):
    router["engine"].stop()
    r = complete(router["client"], "loradb:auto", loradb={"k": 1})
    assert r.status_code == 503 and "cannot be reached" in r.json()["error"]["message"]


def test_route_starts_its_own_engine_and_stops_it_on_sigterm(db_path, smollm2, tmp_path):
    """`loradb route --start-engine`: the engine comes up from .venv-engine, serves through the router,
    and goes with it when the router is stopped (by SIGTERM, as a service manager stops it)."""
    engine_port = free_port()
    proc, url = start_server(db_path, "--base", smollm2, "--start-engine", "--engine-port", engine_port,
                             "--max-loras", 1, "--max-lora-rank", 8, "--state", tmp_path / "state", log=tmp_path / "router.log",
                             command="route", ready="/v1/models", timeout=300)
    try:
        r = httpx.post(f"{url}/v1/completions", json={"model": "spanish", "prompt": "Guardar", **SAMPLING}, timeout=300)
        assert r.status_code == 200 and r.headers["X-Loradb-Adapters"] == "spanish=1"
    finally:
        stop_server(proc)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{engine_port}/v1/models", timeout=5)
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).count(f"--port\0{engine_port}\0")]


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_text(errors="replace")
    except OSError:
        return ""
