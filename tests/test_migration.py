"""A database made by an earlier loradb (schema 1) opens, upgrades in place, and keeps its records."""

import json
import sqlite3

from test_cli import TEXTS, run, write_jsonl
from models import make_adapter

from loradb.db.store.sqlite import MIGRATIONS


DROP_CATALOGUE_INDEX = "DROP INDEX records_created; "  # migration 6
DROP_KEY_COLUMNS = DROP_CATALOGUE_INDEX + "ALTER TABLE records DROP COLUMN z_var; ALTER TABLE records DROP COLUMN task; ALTER TABLE records DROP COLUMN task_z; "


def test_schema_1_database_upgrades_and_keeps_records(bert, tmp_path):
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    adapter = make_adapter(bert, tmp_path / "ad", seed=0)
    assert run("add", db, adapter, "--data", write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"]), "--name", "old")[0] == 0
    conn = sqlite3.connect(db / "index.sqlite")  # turn it back into what schema 1 wrote
    conn.executescript("DROP INDEX records_space_seq; ALTER TABLE records DROP COLUMN seq; " + DROP_KEY_COLUMNS +
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


def test_records_from_before_retrieval_keys_keep_working_with_raw_l2(bert, tmp_path):
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    data = write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"])
    for i in range(2):
        assert run("add", db, make_adapter(bert, tmp_path / f"ad{i}", seed=i), "--data", data, "--name", f"old{i}")[0] == 0
    conn = sqlite3.connect(db / "index.sqlite")  # what schema 4 wrote: no variance, no task
    conn.executescript(DROP_KEY_COLUMNS + "PRAGMA user_version = 4;")
    conn.close()

    code, out, err = run("show", db, "old0", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["keys"] == ["raw-l2", "cosine", "centered-cosine", "arrow"] and shown["task"] is None
    code, out, err = run("search", db, "--data", data, "-k", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["params"]["key"] == "raw-l2" and len(json.loads(out)["results"]) == 2
    code, _, err = run("search", db, "--data", data, "--key", "frechet")
    assert code == 2 and "needs the feature variance" in err and "2 of the 2 records" in err
    code, _, err = run("search", db, "--data", data, "--key", "task", "--instruction", "classify it")
    assert code == 2 and "needs a task embedding" in err
    assert json.loads(run("check", db, "--json")[1])["clean"]


def test_two_processes_opening_an_old_database_both_succeed(tmp_path, monkeypatch):
    """Two processes open a database one schema version behind at the same moment: both see
    it old; the second must not apply the migration the first applied (it failed on the
    duplicate column every time of 20). Five rounds, each with a fresh database."""
    import os
    import time

    from loradb.db.database import LoraDB
    from loradb.db.store import sqlite

    shipped = list(sqlite.MIGRATIONS)
    for round_ in range(5):
        root = tmp_path / f"db{round_}"
        monkeypatch.setattr(sqlite, "MIGRATIONS", shipped)
        code, _, err = run("init", root)  # at today's schema: one version behind the next one
        assert code == 0, err
        monkeypatch.setattr(sqlite, "MIGRATIONS", [*shipped, "ALTER TABLE records ADD COLUMN race_test TEXT"])
        start = time.time() + 0.5
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    time.sleep(max(0.0, start - time.time()))  # both open it at once
                    LoraDB(root).close()
                    status = 0
                finally:
                    os._exit(status)
            children.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        assert codes == [0, 0], (round_, codes)
        conn = sqlite3.connect(root / "index.sqlite")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite.MIGRATIONS)
        conn.close()
