"""A database made by an earlier loradb (schema 1) opens, upgrades in place, and keeps its records."""

import json
import sqlite3

from test_cli import TEXTS, run, write_jsonl
from models import make_adapter

from loradb.store.sqlite import MIGRATIONS


def test_schema_1_database_upgrades_and_keeps_records(bert, tmp_path):
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    adapter = make_adapter(bert, tmp_path / "ad", seed=0)
    assert run("add", db, adapter, "--data", write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"]), "--name", "old")[0] == 0
    conn = sqlite3.connect(db / "index.sqlite")  # turn it back into what schema 1 wrote
    conn.executescript("DROP INDEX records_space_seq; ALTER TABLE records DROP COLUMN seq; "
                       "ALTER TABLE records DROP COLUMN owner; ALTER TABLE records DROP COLUMN privacy; "
                       "DROP TABLE tokens; DROP TABLE state; DROP TABLE settings; PRAGMA user_version = 1;")
    conn.close()

    code, out, err = run("list", db, "--json")
    assert code == 0, err
    [record] = json.loads(out)
    assert record["name"] == "old" and record["owner"] is None and record["private"] is False
    conn = sqlite3.connect(db / "index.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
    assert run("token", "create", db, "--name", "admin", "--scope", "admin")[0] == 0  # the new table is there
    assert json.loads(run("check", db, "--json")[1])["clean"]
