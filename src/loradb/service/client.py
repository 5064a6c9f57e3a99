"""A loradb server used like a local database: `loradb search http://host:8000 --data mine.jsonl`.

RemoteDB offers the LoraDB methods the commands call. Everything that touches data runs
here, on the client: z is computed locally from the client's own texts (optionally with
differential privacy) and only the vector is sent; adapters are validated against the
client's base model before upload. The token comes from LORADB_TOKEN.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from loradb.db.contribute import prepare_contribution, write_record_file
from loradb.db.compose import check_weights_or_target, refuse_if_abstained
from loradb.db.lineage import card_for
from loradb.db.results import DEFAULT_K, Hit, SearchResult
from loradb.lora.merges import MergeSpec
from loradb.errors import Abstained, AccessDenied, Conflict, LoradbError, NotFound, RemoteError
from loradb.io.files import to_json
from loradb.weighting.registry import DEFAULT_METHOD, METHODS
from loradb.weighting.shots import learn_weights_on, read_few_shot
from loradb.retrieval.targets import resolve_target
from loradb.service.wire import API, TOKEN_ENV, RemoteRecord, extract_archive, representation_doc

MAX_ARCHIVE_BYTES = 64 << 30  # what a client accepts from its server: bounded, but any real adapter fits
# a request that changes nothing is sent again after these pauses (about 16 s in all: a server or
# database restart) when the server cannot be reached or answers 502/503/504; uploads and removals
# are not: the first attempt may have landed
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RETRIED_POSTS = ("/search", "/compose")
TRANSIENT_STATUS = (502, 503, 504)


class _Transient(Exception):
    def __init__(self, error: LoradbError, retry_after: float = 0.0):
        self.error, self.retry_after = error, retry_after


def is_url(target) -> bool:
    return isinstance(target, str) and target.startswith(("http://", "https://"))


class RemoteDB:
    """A database behind a loradb server."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 600.0,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS):
        try:
            import httpx
        except ImportError:
            raise LoradbError("talking to a loradb server needs httpx: pip install 'loradb[server]'") from None
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        self.retry_delays = retry_delays
        self.http = httpx.Client(base_url=self.url + API, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RemoteDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- transport -------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs):
        def once():
            with self._transport_errors():
                response = self.http.request(method, path, **kwargs)
            self._raise_for(response.status_code, response.content, response.headers)
            return response
        return self._retrying(method, path, once)

    def _download(self, method: str, path: str, into: Path, **kwargs) -> Path:
        """Stream a response body (an archive) to a file."""
        out = into / "download.tar"

        def once():
            with self._transport_errors(), self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    self._raise_for(response.status_code, response.read(), response.headers)
                with open(out, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
            return out
        return self._retrying(method, path, once)

    def _retrying(self, method: str, path: str, once):
        """once(), sent again after a pause while it fails transiently, if it changes nothing."""
        delays = iter(self.retry_delays if method == "GET" or (method == "POST" and path in RETRIED_POSTS) else ())
        while True:
            try:
                return once()
            except _Transient as transient:
                delay = next(delays, None)
                if delay is None:
                    raise transient.error from None
                time.sleep(max(delay, min(transient.retry_after, 30.0)))

    @contextmanager
    def _transport_errors(self):
        """Connection failures as _Transient (a read that timed out is not: the server was working)."""
        try:
            yield
        except (self._httpx.ReadTimeout, self._httpx.WriteTimeout, self._httpx.PoolTimeout) as e:
            raise RemoteError(f"the loradb server at {self.url} did not answer in time ({e})") from None
        except self._httpx.TransportError as e:
            raise _Transient(RemoteError(f"cannot reach the loradb server at {self.url} ({e})")) from None
        except self._httpx.HTTPError as e:
            raise RemoteError(f"cannot reach the loradb server at {self.url} ({e})") from None

    @staticmethod
    def _raise_for(status: int, body: bytes, headers) -> None:
        if status < 400:
            return
        error = _error_from(status, body)
        if status in TRANSIENT_STATUS:
            try:
                wait = float(headers.get("retry-after", 0))
            except ValueError:
                wait = 0.0
            raise _Transient(error, wait)
        raise error

    # ---- reading -------------------------------------------------------------------

    def list(self, *, base: str | None = None, meta: dict[str, str] | None = None, fits=None) -> list[RemoteRecord]:
        if base is not None or meta or fits is not None:
            return self._list_filtered(base, meta or {}, fits)
        records, offset, page = [], 0, 10_000
        while True:
            batch = self._request("GET", "/records", params={"offset": offset, "limit": page}).json()
            records += [RemoteRecord(doc) for doc in batch]
            if len(batch) < page:
                return records
            offset += page

    def _list_filtered(self, base: str | None, meta: dict[str, str], fits) -> builtins.list[RemoteRecord]:
        """Through the catalogue's filtered table (one metadata pair there, the rest here); `fits`
        is the local model folder's fingerprint."""
        from loradb.db.listing import base_filter, has_meta

        base = base_filter(base, fits)
        pairs = list(meta.items())
        params = {**({"base": base} if base else {}), **({"meta": f"{pairs[0][0]}={pairs[0][1]}"} if pairs else {})}
        records, offset, page = [], 0, 1000
        while True:
            doc = self._request("GET", "/catalogue/records", params={**params, "offset": offset, "limit": page}).json()
            records += [RemoteRecord(r) for r in doc["records"] if has_meta(r["meta"], pairs[1:])]
            offset += page
            if offset >= doc["total"]:
                return records

    def get(self, ref: str) -> RemoteRecord:
        return RemoteRecord(self._request("GET", f"/records/{quote(ref, safe='')}").json())

    def spaces(self) -> builtins.list[dict]:
        return self._request("GET", "/spaces").json()

    def check(self):
        from loradb.db.results import CheckReport

        doc = self._request("GET", "/check").json()
        return CheckReport(problems=doc["problems"], orphans=doc["orphans"], temp_files=doc["temp_files"], records=doc["records"])

    def export(self, ref: str, out) -> Path:
        """Download a stored adapter as a PEFT directory, verified against its recorded sha256."""
        from loradb.io.files import atomic_output_dir
        from loradb.io.files import sha256_file

        record = self.get(ref)
        with tempfile.TemporaryDirectory(prefix="loradb-export-") as tmp, atomic_output_dir(Path(out)) as dst:
            archive = self._download("GET", f"/records/{quote(record.id, safe='')}/adapter", Path(tmp))
            extract_archive(archive, dst, max_bytes=MAX_ARCHIVE_BYTES)
            from loradb.lora.adapter import WEIGHTS_NAME

            if sha256_file(dst / WEIGHTS_NAME) != record.doc.get("blob_sha256"):
                raise RemoteError(f"the adapter of {record.name} arrived with another sha256 than the server records")
            write_record_file(dst, record)
        return Path(out)

    # ---- writing -------------------------------------------------------------------

    def add(self, adapter_dir, *, data=None, repr=None, name=None, meta=None, base=None, recipe=None, dp=None,
            task: dict | None = None, progress: bool = True) -> RemoteRecord:
        """Validate the adapter against the local base model, compute z here, upload both."""
        c = prepare_contribution(adapter_dir, data=data, repr=repr, name=name, meta=meta, base=base, recipe=recipe,
                                 spaces=self.spaces(), dp=dp, task=task, progress=progress, name_free=self._name_free)
        assert c.rep is not None  # with data or repr, never without
        with open(c.weights, "rb") as weights:
            doc = self._request("POST", "/records", files={
                "adapter_config": ("adapter_config.json", json.dumps(c.adapter.config).encode(), "application/json"),
                "adapter_model": ("adapter_model.safetensors", weights, "application/octet-stream"),
            }, data={"representation": json.dumps(representation_doc(c.rep)), "name": c.name, "meta": json.dumps(c.meta)}).json()
        return RemoteRecord({**doc, "privacy": c.rep.privacy})

    def _name_free(self, name: str) -> None:
        """The server's answer to "may I add a record of this name?" (a read-only token, a taken
        name), before the data is encoded."""
        try:
            self._request("GET", f"/names/{quote(name, safe='')}")
        except NotFound:  # a server from before this question: the upload itself is refused if it must be
            pass

    def remove(self, ref: str) -> RemoteRecord:
        return RemoteRecord(self._request("DELETE", f"/records/{quote(ref, safe='')}").json())

    def gc(self):
        raise LoradbError(f"gc runs where the database lives: `loradb gc DB` on the machine serving {self.url}")

    # ---- retrieval and composition ----------------------------------------------------

    def search(self, *, data=None, repr=None, base=None, space=None, k: int = DEFAULT_K, method: str = DEFAULT_METHOD,
               temperature=None, l1=None, key: str | None = None, task: dict | None = None, dp=None,
               scale: float | None = None, progress: bool = True) -> SearchResult[RemoteRecord]:
        """Compute the target's z (and task key) here and ask the server for the nearest adapters and weights."""
        body = self._query(data=data, repr=repr, base=base, space=space, k=k, method=method, temperature=temperature,
                           l1=l1, key=key, task=task, dp=dp, scale=scale, progress=progress)
        return _result_from(self._request("POST", "/search", json=body).json())

    def compose(self, out, *, spec: MergeSpec | None = None, weights: dict | None = None, merged: bool = False,
                shots=None, labels=None, progress: bool = True, force: bool = False,
                **search_args) -> SearchResult[RemoteRecord]:
        """Have the server merge the retrieved (or given) adapters; write the adapter, or with
        merged=True the local base model with it merged in. Few-shot methods learn the
        weights here (see _learn_here) and send only the weights."""
        from loradb.io.files import atomic_output_dir

        method = search_args.get("method")
        few_shot = read_few_shot(method, shots, labels)
        body = (spec or MergeSpec()).to_doc()
        base = search_args.get("base")
        learned = None
        check_weights_or_target(weights, search_args)
        if weights is not None:
            body["weights"] = weights
        elif few_shot:  # the labeled shots stay here: learn the weights locally, let the server merge them as given
            assert method is not None  # read_few_shot gives shots only for a few-shot method
            learned = self._learn_here(few_shot, method, progress=progress, force=force, **search_args)
            body["weights"] = {h.record.id: h.weight for h in learned.hits}
        else:
            body.update(self._query(progress=progress, **search_args), **({"force": True} if force else {}))
        with tempfile.TemporaryDirectory(prefix="loradb-compose-") as tmp:
            archive = self._download("POST", "/compose", Path(tmp), json=body)
            unpacked = Path(tmp) / "adapter"
            unpacked.mkdir()
            extract_archive(archive, unpacked, max_bytes=MAX_ARCHIVE_BYTES)
            from loradb.lora.export import CARD_NAME, PROVENANCE_NAME

            provenance = json.loads((unpacked / PROVENANCE_NAME).read_text())
            if learned is not None:  # record how the weights came about, not just "given"
                provenance.update({**learned.to_dict(), "compression": provenance.get("compression"),
                                   "weights_learned_on": "client"})
                (unpacked / PROVENANCE_NAME).write_text(to_json(provenance) + "\n")
            card = card_for(provenance)
            if merged:
                _merge_locally(unpacked, Path(out), provenance, base, card)
            else:
                if card is not None:
                    (unpacked / CARD_NAME).write_text(card)
                with atomic_output_dir(Path(out)) as dst:
                    for item in unpacked.iterdir():
                        shutil.move(str(item), dst / item.name)
        return _result_from(provenance)

    def _learn_here(self, few_shot: tuple, learn_method: str, *, progress: bool, force: bool = False,
                    **search_args) -> SearchResult[RemoteRecord]:
        """Retrieve on the server, download the retrieved adapters (sha256-verified), and learn
        their few-shot weights on this machine's base model; the shots never leave it."""
        from loradb.lora.adapter import read_adapter

        result = self.search(progress=progress, **{**search_args, "method": METHODS[learn_method].starts_from})
        refuse_if_abstained(result, force)  # before any adapter is downloaded or any weight learned
        first = self.get(result.hits[0].record.id).doc
        base_model = _local_base(search_args.get("base"), first.get("base"), first.get("base_fingerprint"),
                                 "few-shot composition over a server runs the base model here", "the retrieved adapters are")
        with tempfile.TemporaryDirectory(prefix="loradb-fewshot-") as tmp:
            adapters = [read_adapter(self.export(h.record.id, Path(tmp) / str(i))) for i, h in enumerate(result.hits)]
        learned, params = learn_weights_on(learn_method, adapters, [h.weight for h in result.hits], few_shot, base_model)
        return result.reweighted(learn_method, learned, params)

    def _query(self, *, data, repr, base, space, k, method, temperature, l1, key, task, dp, progress,
               scale: float | None = None) -> dict:
        from loradb.retrieval.keys import ARROW

        if key == ARROW:  # it reads the texts, which never leave this machine
            raise LoradbError(f"retrieval key {ARROW} reads the target's texts, which are never sent to a server; "
                              "use it on a local database, or another key")
        target = resolve_target(self.spaces(), data=data, repr=repr, base=base, space=space, dp=dp, task=task,
                                progress=progress)
        return {"representation": representation_doc(target), "k": k, "method": method, "temperature": temperature,
                "l1": l1, "key": key, "space": target.space.id,
                **({"scale": scale} if scale is not None else {})}  # only when given: older servers refuse unknown fields


def _local_base(given, stored: str | None, fingerprint: str | None, need: str, subject: str):
    """This machine's copy of the base model: --base, else where the stored name is found here
    (identity.locate); refused unless its fingerprint is the one the server's records name."""
    from loradb.lora.base import load_base
    from loradb.models.locate import locate
    from loradb.errors import BaseModelMismatch

    if given is None:
        given = locate(stored, fingerprint) if stored else None
        if given is None:
            raise LoradbError(f"{need}: pass `base` DIR")
    base_model = load_base(given)
    if base_model.fingerprint != fingerprint:
        raise BaseModelMismatch(f"{subject} for base fingerprint {str(fingerprint)[:12]}, not {base_model.short}")
    return base_model


def _merge_locally(adapter_dir: Path, out: Path, provenance: dict, base, card: str | None = None) -> None:
    """Write the local copy of the base model with a received composed adapter merged in."""
    import torch

    from loradb.lora.adapter import read_adapter
    from loradb.lora.export import write_merged_model

    base_model = _local_base(base, provenance.get("base"), provenance.get("base_fingerprint"),
                             "--merged over a server needs your copy of the base model", "the composed adapter is")
    adapter = read_adapter(adapter_dir)
    composed = {name: (torch.from_numpy(m.A), torch.from_numpy(m.B) * m.scale) for name, m in adapter.modules.items()}
    write_merged_model(out, composed, fan_in_fan_out=adapter.fan_in_fan_out, base=base_model, provenance=provenance,
                       card=card)


def _result_from(doc: dict) -> SearchResult[RemoteRecord]:
    hits = [Hit(RemoteRecord(row.get("record") or {"id": row["id"], "name": row["name"]}),
                float("nan") if row.get("distance") is None else float(row["distance"]), float(row["weight"]))
            for row in doc["results"]]
    return SearchResult(method=doc["method"], hits=hits, residual=doc.get("residual"), params=doc.get("params") or {},
                        space=doc.get("space"), compression=doc.get("compression"), privacy=doc.get("privacy"),
                        fit=doc.get("fit"), lineage=doc.get("lineage"))


def _error_from(status: int, body: bytes) -> LoradbError:
    fit = None
    try:
        doc = json.loads(body)
        message = doc.get("error") or body.decode(errors="replace")[:300]
        fit = doc.get("fit") if isinstance(doc.get("fit"), dict) else None
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")[:300] or "no details"
    message = f"server: {message} (HTTP {status})"
    if status == 409 and fit is not None:
        return Abstained(message, fit)
    if status == 401:
        return AccessDenied(message, authenticated=False)
    kinds = {403: AccessDenied, 404: NotFound, 409: Conflict}
    return kinds.get(status, RemoteError)(message)

