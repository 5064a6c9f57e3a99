"""SIGKILL `loradb add` at random moments: the database stays consistent.

After every kill `loradb check` must find no problems (an orphan blob or stray temp
file is allowed: it is reported and `loradb gc` removes it), every add that reported
success is present, and the database keeps working.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from models import make_adapter, make_bert

from loradb.retrieval.represent import Representation, default_space, save_representation
from loradb.lora.base import load_base


def _cli(*argv, env):
    return subprocess.run([sys.executable, "-m", "loradb.cli", *map(str, argv)], capture_output=True, text=True, env=env)


def test_sigkill_during_add_leaves_database_consistent(tmp_path):
    base = make_bert(tmp_path / "base", hidden=128)
    adapter = make_adapter(base, tmp_path / "adapter", seed=0, r=64, targets=("query", "key", "value", "dense"))
    space = default_space(load_base(base))
    save_representation(Representation(np.ones(space.dim, dtype=np.float32), space, str(base), 3), tmp_path / "z.npy")
    env = {**os.environ, "LORADB_CACHE_DIR": str(tmp_path / "cache")}
    db = tmp_path / "db"
    assert _cli("init", db, env=env).returncode == 0

    def add_cmd(name):
        return [sys.executable, "-m", "loradb.cli", "add", str(db), str(adapter), "--repr", str(tmp_path / "z.npy"),
                "--base", str(base), "--name", name]

    start = time.perf_counter()  # one undisturbed add sets the time scale
    assert subprocess.run(add_cmd("warmup"), capture_output=True).returncode == 0
    duration = time.perf_counter() - start

    rng = random.Random(1234)
    acknowledged, killed = {"warmup"}, 0
    for i in range(40):
        name = f"r{i}"
        proc = subprocess.Popen(add_cmd(name), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # half the kills land anywhere, half in the last part of the run where the writes happen
        delay = rng.uniform(0, duration) if i % 2 else rng.uniform(0.6 * duration, 1.1 * duration)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if proc.returncode == 0:
            acknowledged.add(name)
        report = json.loads(_cli("check", db, "--json", env=env).stdout)
        assert report["clean"], report["problems"]
    assert killed >= 10  # the test really interrupted adds

    names = {r["name"] for r in json.loads(_cli("list", db, "--json", env=env).stdout)}
    assert acknowledged <= names
    assert _cli("gc", db, env=env).returncode == 0
    report = json.loads(_cli("check", db, "--json", env=env).stdout)
    assert report["clean"] and report["orphans"] == [] and report["temp_files"] == []
    assert _cli("add", db, adapter, "--repr", tmp_path / "z.npy", "--base", base, "--name", "after", env=env).returncode == 0


def test_concurrent_adds_all_land(tmp_path):
    """Several processes adding at once: every acknowledged record is there, once."""
    base = make_bert(tmp_path / "base")
    adapter = make_adapter(base, tmp_path / "adapter", seed=0, r=4)
    space = default_space(load_base(base))
    save_representation(Representation(np.ones(space.dim, dtype=np.float32), space, str(base), 3), tmp_path / "z.npy")
    env = {**os.environ, "LORADB_CACHE_DIR": str(tmp_path / "cache")}
    db = tmp_path / "db"
    assert _cli("init", db, env=env).returncode == 0
    procs = [subprocess.Popen([sys.executable, "-m", "loradb.cli", "add", str(db), str(adapter), "--repr", str(tmp_path / "z.npy"),
                               "--base", str(base), "--name", f"c{i}"], env=env, stderr=subprocess.PIPE) for i in range(6)]
    codes = [p.wait() for p in procs]
    assert codes == [0] * 6, [p.stderr.read() for p in procs]
    records = json.loads(_cli("list", db, "--json", env=env).stdout)
    assert sorted(r["name"] for r in records) == [f"c{i}" for i in range(6)]
    assert len({r["id"] for r in records}) == 6
    assert json.loads(_cli("check", db, "--json", env=env).stdout)["clean"]
