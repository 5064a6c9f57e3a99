"""The adapters loaded into the engine, kept within its `max_loras` as a least-recently-used set.

A request holds its adapter (`use`) from before it is forwarded until its answer has been
sent, so an adapter is never unloaded under a request that is using it: eviction takes the
least recently used idle adapter, and when every slot is busy the request waits for one.
Two requests that need the same adapter while it is not loaded compose and load it once
(the second waits for the first's work and shares its result or its error). An adapter
unloaded (evicted, or dropped with a removed record) is handed to `unloaded` before anyone
can load it again, so its composition can be deleted without racing a new load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from loradb.errors import LoradbError
from loradb.route.engine import Engine, EngineRefused
from loradb.route.plan import Plan


class LoadedSet:
    def __init__(self, engine: Engine, max_loras: int, compose: Callable[[Plan], Awaitable[Path]],
                 discard: Callable[[Plan], Awaitable[None]] | None = None,
                 unloaded: Callable[[str], Awaitable[None]] | None = None):
        self.engine = engine
        self.max_loras = max_loras
        self._compose = compose  # plan -> its adapter directory (runs in the worker thread)
        self._discard = discard  # forget a composition the engine refused to load
        self._unloaded = unloaded  # engine name -> forget its composition (evicted or dropped)
        self._loaded: OrderedDict[str, int] = OrderedDict()  # engine name -> requests using it; last = most recent
        self._pending: dict[str, asyncio.Future] = {}  # engine name -> its load in progress
        self._unloading: dict[str, asyncio.Future] = {}  # engine name -> its unload in progress
        self._changed = asyncio.Condition()
        self._loads_of: dict[str, int] = {}  # engine name -> the number of the load that put it there
        self.loads = 0  # how many loads reached the engine (what tests and the benchmark count)

    @property
    def names(self) -> list[str]:
        return list(self._loaded)

    @contextlib.asynccontextmanager
    async def use(self, plan: Plan) -> AsyncIterator[bool]:
        """Hold the plan's adapter loaded in the engine for the duration; yields whether it was
        already loaded (a cache hit)."""
        name = plan.engine_name
        hit = await self._acquire(name, plan)
        held = self._loads_of.get(name)  # which load of it this request holds (forget may start another)
        try:
            yield hit
        finally:
            async with self._changed:
                if name in self._loaded and self._loads_of.get(name) == held:
                    self._loaded[name] -= 1
                self._changed.notify_all()

    async def _acquire(self, name: str, plan: Plan) -> bool:
        while True:
            async with self._changed:
                if name in self._loaded:
                    self._loaded[name] += 1
                    self._loaded.move_to_end(name)
                    return True
                loading, unloading = self._pending.get(name), self._unloading.get(name)
                if loading is None and unloading is None:
                    room = len(self._loaded) + len(self._pending) + len(self._unloading) < self.max_loras
                    idle = None if room else next((n for n, users in self._loaded.items() if users == 0), None)
                    if room or idle is not None:
                        self._pending[name] = asyncio.get_running_loop().create_future()
                        if idle is not None:
                            del self._loaded[idle]
                            self._unloading[idle] = asyncio.get_running_loop().create_future()
                        break
                    await self._changed.wait()  # every slot is in use: wait for a request to finish
                    continue
            if loading is not None:  # another request loads it: share its result, or its error
                await asyncio.shield(loading)
            else:  # it is being unloaded: wait, then look again (loaded still, if the engine kept it)
                assert unloading is not None
                with contextlib.suppress(Exception):
                    await asyncio.shield(unloading)
        try:
            if idle is not None:
                await self._settle(idle, self.engine.unload(idle))
            path = await self._compose(plan)
            try:
                await self.engine.load(name, str(path))
            except EngineRefused:
                if self._discard is not None:  # nothing the engine would not take stays cached
                    await self._discard(plan)
                raise
            self.loads += 1
        except BaseException as e:
            await self._finish(name, self._pending, error=e)
            raise
        await self._finish(name, self._pending, loaded=True)
        return False

    def load_of(self, name: str) -> int | None:
        """Which load of `name` is in the engine now: read right after `use` is entered (no await
        between), it is the load that request holds, for `forget`."""
        return self._loads_of.get(name)

    async def _settle(self, name: str, unloading) -> bool:
        """Await an unload; whether the engine no longer holds the adapter. Only then is its
        composition handed to `unloaded`; an unload the engine refused otherwise (or could not
        be asked) leaves it counted, idle, as the engine still holds it (and may read its folder)."""
        gone = False
        try:
            try:
                await unloading
            except EngineRefused as e:
                if e.status != 404:  # 404: no such adapter, so it is gone as well
                    raise
            gone = True
            if self._unloaded is not None:  # before the unload is finished: no new load of it races the deletion
                await self._unloaded(name)
        finally:
            await self._finish(name, self._unloading, still_loaded=not gone)
        return gone

    async def forget(self, name: str, load: int | None) -> None:
        """The engine answered that it does not hold `name` (it restarted): stop counting it as
        loaded, so the next use loads it again; unless it was loaded again since `load` (another
        request that met the same answer forgot it first), whose count must stand."""
        async with self._changed:
            if self._loads_of.get(name) == load:
                self._loaded.pop(name, None)
                self._loads_of.pop(name, None)
            self._changed.notify_all()

    async def _finish(self, name: str, table: dict, *, loaded: bool = False, still_loaded: bool = False,
                      error: BaseException | None = None) -> None:
        async with self._changed:
            future = table.pop(name)
            if loaded:
                self._loaded[name] = 1
                self._loads_of[name] = self.loads
            elif table is self._unloading:
                if still_loaded:
                    self._loaded.setdefault(name, 0)
                else:
                    self._loads_of.pop(name, None)
            if error is not None:
                future.set_exception(error)
                future.exception()  # retrieved: a failure with no other waiter is not "never retrieved"
            else:
                future.set_result(None)
            self._changed.notify_all()

    async def drop(self, names: set[str]) -> set[str]:
        """Unload adapters whose records were removed, each once no request uses it and any load of
        it in progress is done. Returns the names the engine no longer holds (unloaded now, or
        never loaded); an engine that refused or could not be reached keeps the rest, still counted."""
        gone: set[str] = set()
        for name in names:
            while True:
                async with self._changed:
                    busy = self._pending.get(name) or self._unloading.get(name)
                    if busy is None:
                        if name not in self._loaded:
                            gone.add(name)
                            break
                        if self._loaded[name] > 0:
                            await self._changed.wait()
                            continue
                        del self._loaded[name]
                        self._unloading[name] = asyncio.get_running_loop().create_future()
                if busy is not None:  # a load or unload of it in progress: let it finish, then look again
                    with contextlib.suppress(Exception):
                        await asyncio.shield(busy)
                    continue
                with contextlib.suppress(LoradbError):  # refused or unreachable: still held, still counted
                    if await self._settle(name, self.engine.unload(name)):
                        gone.add(name)
                break
        return gone
