"""pgvector's two forms of a vector as loradb sends and reads them, and a large read a chunk at
a time (postgres.py, pgkeys.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from loradb.db.store.sqlshared import ROWS_PER_CHUNK


def vector_literal(z: np.ndarray) -> str:
    """pgvector's text form of z as float32; each value is written as the float64 equal to it
    (exact, and str() of a list is one C call: the generator of reprs took 1 ms a query)."""
    return str(np.asarray(z, dtype=np.float32).astype(np.float64).tolist()).replace(" ", "")


def unpack_vector(sent: bytes) -> np.ndarray:
    """A vector as pgvector's vector_send writes it: int16 dim, int16 unused, big-endian float4s
    (read by numpy in one go; parsing the text form took most of a search's client time)."""
    return np.frombuffer(sent, dtype=">f4", offset=4).astype(np.float32)


def server_chunks(conn, sql: str, params: tuple = ()) -> Iterator[list]:
    """A query's rows, ROWS_PER_CHUNK at a time, through a server-side cursor (psycopg's default
    cursor would hold every row in the client at once)."""
    with conn.transaction(), conn.cursor(name="loradb_chunks") as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(ROWS_PER_CHUNK):
            yield rows
