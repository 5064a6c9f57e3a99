"""The catalogue at `/` of `loradb serve`, driven in a real Chromium by Playwright.

Chromium is the system's (Debian's `chromium` package, which `make test` installs when it is
missing) or the one LORADB_CHROMIUM names; Playwright only drives it and downloads nothing.
Each test reads what a person would see: the table's rows, the record's provenance, the
weights after dropping a representation, and the composed adapter it downloads, which must
load with PEFT and equal `loradb compose` of the same target.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from browser_helpers import drop_representation, launch
from models import load_model, make_adapter
from server_helpers import running_server
from test_cli import TEXTS, run, write_jsonl

pytestmark = pytest.mark.browser
SCRIPT_NAME = "<script>alert(1)"  # a record name may not hold "/" or "=", so the tag stays open
EVIL_META = "<img src=x onerror=alert(2)><script>alert(3)</script>"


@pytest.fixture(scope="module")
def catalogue(bert, tmp_path_factory):
    """A database with three domain adapters and one whose name and metadata are markup; a
    server that needs a token, a reader's token, and a target representation of finance texts."""
    root = tmp_path_factory.mktemp("catalogue")
    db = root / "db"
    assert run("init", db)[0] == 0
    code, reader, err = run("token", "create", db, "--name", "reader", "--scope", "read")
    assert code == 0, err
    adapters = {}
    for i, domain in enumerate(TEXTS):
        adapters[domain] = make_adapter(bert, root / f"ad-{domain}", seed=i, r=2 + 2 * i)
        data = write_jsonl(root / f"{domain}.jsonl", TEXTS[domain])
        code, out, err = run("add", db, adapters[domain], "--data", data, "--name", domain, "--meta", f"domain={domain}",
                             "--meta", f"team=t{i % 2}")
        assert code == 0, err
    code, out, err = run("add", db, adapters["sports"], "--data", root / "sports.jsonl", "--name", SCRIPT_NAME,
                         "--meta", f"note={EVIL_META}")
    assert code == 0, err
    target_texts = write_jsonl(root / "target.jsonl", TEXTS["finance"][::-1])
    code, out, err = run("represent", target_texts, "--base", bert, "-o", root / "target.npy")
    assert code == 0, err
    code, out, err = run("represent", target_texts, "--base", bert, "--max-length", "16", "-o", root / "elsewhere.npy")
    assert code == 0, err  # another recipe, so another space
    with running_server(db, log=root / "server.log") as url:
        yield {"db": db, "url": url, "token": reader.strip(), "root": root, "bert": bert, "adapters": adapters}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            chromium = launch(p)
        except RuntimeError as e:  # no Chromium: the message says how to get one
            pytest.fail(str(e))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, catalogue):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"a script ran: {d.message}"), d.dismiss()))
    yield page
    context.close()
    assert not errors, f"the page threw or ran injected script: {errors}"


def signed_in(page, catalogue, hash_: str = "#/records"):
    """Open the catalogue, type the token, and wait for the view to render."""
    page.goto(catalogue["url"] + "/" + hash_)
    page.wait_for_function("() => document.body.dataset.ready")  # the tokenless visit has answered (refused)
    page.fill("#token", catalogue["token"])
    page.click("#token-form button[type=submit]")
    ready(page, hash_.lstrip("#"))
    return page


def ready(page, hash_: str):
    page.wait_for_function("h => document.body.dataset.ready === h", arg=hash_, timeout=15_000)


def table_rows(page, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"#{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_token_rules_then_the_table_lists_every_record_with_markup_as_text(page, catalogue):
    page.goto(catalogue["url"] + "/")
    ready(page, "error")
    assert "enter a token" in page.text_content("#status")
    assert page.locator("#records").count() == 0  # nothing listed without a token

    signed_in(page, catalogue)
    rows = table_rows(page, "records")
    assert sorted(r[0] for r in rows) == sorted([*TEXTS, SCRIPT_NAME])
    assert page.text_content("#range") == "1–4 of 4"
    evil = next(r for r in rows if r[0] == SCRIPT_NAME)
    assert evil[9] == f"note={EVIL_META}"  # shown as the text it is
    assert page.locator("main script, main img").count() == 0
    cooking = next(r for r in rows if r[0] == "cooking")
    assert cooking[1] == catalogue["bert"].name  # the base's portable name (its folder's), never a local path
    assert cooking[3] == "2" and cooking[4] == "query, value"
    assert cooking[6] == "local" and cooking[8] == "exact mean" and "domain=cooking" in cooking[9]
    # the token lives in this tab's session storage only
    assert page.evaluate("sessionStorage.getItem('loradb-token')") == catalogue["token"]
    assert page.evaluate("localStorage.length") == 0


def test_filters_narrow_the_table(page, catalogue):
    signed_in(page, catalogue)
    page.fill("#filter-q", "fin")
    page.click("#filter-apply")
    ready(page, "/records?q=fin")
    assert [r[0] for r in table_rows(page, "records")] == ["finance"]

    page.fill("#filter-q", "")
    page.fill("#filter-meta", "team=t0")
    page.click("#filter-apply")
    ready(page, "/records?meta=team%3Dt0")
    assert sorted(r[0] for r in table_rows(page, "records")) == ["cooking", "sports"]

    page.goto(catalogue["url"] + "/#/records?meta=nokey")  # a malformed filter: a message, not a broken page
    ready(page, "error")
    assert "KEY=VALUE" in page.text_content("#status")


def test_record_page_shows_provenance_neighbours_and_downloads_the_adapter(page, catalogue, tmp_path):
    signed_in(page, catalogue)
    page.click("text=finance")
    page.wait_for_selector("#provenance")
    code, out, err = run("show", catalogue["db"], "finance", "--json")
    shown = json.loads(out)
    provenance = page.text_content("#provenance")
    for fact in (shown["id"], shown["base_fingerprint"], shown["blob_sha256"], shown["space"], "local (loradb add)"):
        assert fact in provenance
    assert page.text_content("#record-name") == "finance"
    neighbours = [r[0] for r in table_rows(page, "neighbours")]
    assert sorted(neighbours) == sorted(["cooking", "sports", SCRIPT_NAME])
    with page.expect_download() as download:
        page.click("#download")
    archive = tmp_path / "finance.tar"
    download.value.save_as(archive)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names


def test_map_places_a_dropped_representation_and_downloads_the_composed_adapter(page, catalogue, tmp_path):
    from peft import PeftModel

    root = catalogue["root"]
    signed_in(page, catalogue, "#/map?colour=domain")
    assert "All 4 prototypes" in page.text_content("#map-note")
    assert sorted(page.eval_on_selector_all("#legend span", "s => s.map(x => x.textContent)")) == sorted(TEXTS)
    blank = page.evaluate("document.getElementById('map').toDataURL()")

    drop_representation(page, root / "target.npy")
    page.wait_for_selector("#weights")
    assert page.inner_text("#fit").startswith("fit: not checked (the space has no fit threshold")  # never calibrated
    assert page.inner_text("#licence").startswith("Licence of the composition: unknown")  # no record states one
    shown = [(r[0], float(r[2])) for r in table_rows(page, "weights")]
    code, out, err = run("search", catalogue["db"], "--repr", root / "target.npy", "-k", "5", "--json")
    expected = [(h["name"], h["weight"]) for h in json.loads(out)["results"]]
    assert shown[0][0] == "finance" and [n for n, _ in shown] == [n for n, _ in expected]
    assert [w for _, w in shown] == pytest.approx([w for _, w in expected], abs=1e-4)
    assert page.evaluate("document.getElementById('map').toDataURL()") != blank  # the target was drawn
    # the star sits where the server's PCA puts z: the page projected it with the map's mean and components
    space = json.loads(run("show", catalogue["db"], "finance", "--json")[1])["space"]
    fitted = httpx.get(f"{catalogue['url']}/v1/spaces/{space}/map",
                       headers={"Authorization": f"Bearer {catalogue['token']}"}).json()
    expected = (np.load(root / "target.npy") - np.array(fitted["mean"])) @ np.array(fitted["components"]).T
    star = page.eval_on_selector("#map", "c => [Number(c.dataset.targetX), Number(c.dataset.targetY)]")
    assert star == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)

    page.select_option("#method", "uniform")
    page.wait_for_function("() => [...document.querySelectorAll('#weights .weight')].every(c => c.textContent === '0.2500')")
    page.fill("#scale", "2")  # the update's size: every weight doubled, and composed so
    page.dispatch_event("#scale", "change")
    page.wait_for_function("() => [...document.querySelectorAll('#weights .weight')].every(c => c.textContent === '0.5000')")

    with page.expect_download() as download:
        page.click("#compose")
    archive = tmp_path / "composed.tar"
    download.value.save_as(archive)
    composed = tmp_path / "composed"
    with tarfile.open(archive) as tar:
        tar.extractall(composed, filter="data")
    reference = tmp_path / "reference"
    code, out, err = run("compose", catalogue["db"], "--repr", root / "target.npy", "--method", "uniform", "--scale", "2",
                         "--out", reference)
    assert code == 0, err

    inputs = {"input_ids": torch.tensor([[2, 5, 7, 9, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}

    def hidden(adapter: Path | None):
        model = load_model(catalogue["bert"])
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        with torch.no_grad():
            return model(**inputs).last_hidden_state

    from_page, from_cli = hidden(composed), hidden(reference)
    torch.testing.assert_close(from_page, from_cli, rtol=0, atol=1e-6)
    assert (from_page - hidden(None)).abs().max() > 1e-3  # the adapter really changes the model


def test_map_points_are_named_under_the_pointer(page, catalogue):
    """Hovering a prototype names its record (and its colour's value) in the map's tooltip; off the
    points there is none."""
    signed_in(page, catalogue, "#/map?colour=domain")
    space = json.loads(run("show", catalogue["db"], "finance", "--json")[1])["space"]
    fitted = httpx.get(f"{catalogue['url']}/v1/spaces/{space}/map", params={"colour": "domain"},
                       headers={"Authorization": f"Bearer {catalogue['token']}"}).json()
    canvas = page.locator("#map")
    box = canvas.bounding_box()
    width, height = page.eval_on_selector("#map", "c => [c.width, c.height]")
    # where the page draws each prototype: its extent fitted into the canvas less an 18-px margin
    xs, ys, pad = fitted["x"], fitted["y"], 18
    sx = (width - 2 * pad) / ((max(xs) - min(xs)) or 1)
    sy = (height - 2 * pad) / ((max(ys) - min(ys)) or 1)
    scale = box["width"] / width
    titles = {}
    for i, name in enumerate(fitted["names"]):
        page.mouse.move(box["x"] + (pad + (xs[i] - min(xs)) * sx) * scale, box["y"] + (height - pad - (ys[i] - min(ys)) * sy) * scale)
        titles[name] = canvas.get_attribute("title")
    assert titles["cooking"] == "cooking (domain=cooking)" and titles["finance"] == "finance (domain=finance)"
    # the markup-named record shares sports' data (one point): the tooltip names one of the two, as text
    assert titles["sports"] in ("sports (domain=sports)", SCRIPT_NAME) and titles[SCRIPT_NAME] == titles["sports"]
    page.mouse.move(box["x"] + 2, box["y"] + 2)  # a corner, inside the margin: no point there
    assert not canvas.get_attribute("title")


def test_narrow_window_and_icon(browser, catalogue):
    """At 420 px wide the page does not scroll sideways (wide tables scroll in their own box), and
    the browser's icon request is answered."""
    context = browser.new_context(viewport={"width": 420, "height": 800})
    page = context.new_page()
    try:
        signed_in(page, catalogue)
        for view in ("#/records", "#/map"):
            page.goto(catalogue["url"] + "/" + view)
            page.wait_for_selector("#records, #map")
            assert page.evaluate("document.documentElement.scrollWidth") <= 420, view
    finally:
        context.close()
    icon = httpx.get(catalogue["url"] + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml") and b"<svg" in icon.content


def test_map_refuses_a_representation_of_another_space(page, catalogue):
    signed_in(page, catalogue, "#/map")
    drop_representation(page, catalogue["root"] / "elsewhere.npy")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('this representation is of space')")
    assert page.locator("#weights").count() == 0


def test_public_read_opens_the_catalogue_without_a_token(browser, catalogue):
    with running_server(catalogue["db"], "--public-read", log=catalogue["root"] / "public.log") as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        ready(page, "/records")
        assert len(table_rows(page, "records")) == 4
        context.close()


def test_an_imported_record_shows_it_has_no_data_summary_and_no_neighbours(browser, bert, tmp_path):
    """A record imported without its data: its page says so, offers no map, lists no neighbours."""
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    make_adapter(bert, tmp_path / "imports" / "imported-lora", seed=7)
    for domain in ("cooking", "sports"):  # records with data beside it: none is its neighbour
        code, _, err = run("add", db, make_adapter(bert, tmp_path / domain, seed=40 + len(domain)), "--data",
                           write_jsonl(tmp_path / f"{domain}.jsonl", TEXTS[domain]), "--name", domain)
        assert code == 0, err
    code, out, err = run("import", db, tmp_path / "imports", "--base", bert)
    assert code == 0 and "imported 1 adapters" in out, out + err
    code, token, err = run("token", "create", db, "--name", "reader", "--scope", "read")
    assert code == 0, err
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with running_server(db, log=tmp_path / "server.log") as url:
        signed_in(page, {"url": url, "token": token.strip()})
        page.click("text=imported-lora")
        page.wait_for_selector("#provenance")
        assert "no data summary: on no map" in page.text_content("main")
        assert "none: this record has no summary of its data" in page.text_content("main")
        assert page.locator("#neighbours").count() == 0 and page.locator("main a[href^='#/map']").count() == 0
    context.close()
    assert not errors, errors
