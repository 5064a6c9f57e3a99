"""LoRA-VecDB storage: an index of records (with their representations) and a blob store.

Backends implement the two small protocols below; the embedded default is SQLite for
the index and a content-addressed directory for the blobs (store/sqlite.py, store/blobs.py).
"""

from loradb.db.store.protocol import BlobStore, IndexStore, Record, SearchHit

__all__ = ["BlobStore", "IndexStore", "Record", "SearchHit"]
