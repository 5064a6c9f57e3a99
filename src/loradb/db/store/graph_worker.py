"""The background process that refreshes one embedded space's graph (graphs.refresh_in_background):

    python -m loradb.db.store.graph_worker DB_DIR SPACE_ID [KEY]

It opens its own connection, takes the graph's build lock (exits quietly if another
process holds it), builds or absorbs, and saves the graph atomically.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from loradb.db.store.ann import BuildRunning
    from loradb.db.store.sqlite import SqliteIndex

    root, space_id, *rest = argv
    key = rest[0] if rest else "raw-l2"
    started = time.perf_counter()
    index = SqliteIndex(Path(root))
    try:
        done = [row for row in index.build_index(space_id, wait=False, keys=(key,)) if row["key"] == key]
    except BuildRunning as running:
        print(f"{key} graph of space {space_id}: process {running.pid} is building it", flush=True)
        return 0
    finally:
        index.close()
    print(f"{key} graph of space {space_id}: {done[0]['graph']} after {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
