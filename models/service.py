"""The model service: which version is deployed, the one place generations start, and hot swaps.

Swapping versions is atomic: the new version is loaded first, then one reference changes; new requests
go to the new model at once and generations already running finish on the old one. The replaced
version moves into a small LRU cache (so the Compare tab can still battle it, and a rollback to it is
instant); versions evicted from the cache are closed in the background once their streams end.

The service learns about deploys made elsewhere (the scheduler, ``python launch.py rollback``) by
polling the registry's deployed id every few seconds (:meth:`start_watching`). A version that fails
to load leaves the current one serving and is reported in ``last_error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from models.base import (
    ChatMessage,
    ChatModel,
    Generation,
    GenerationError,
    GenerationResult,
    ModelLoadError,
    SamplingParams,
    sample_seeds,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedVersion:
    version_id: int
    name: str
    model: ChatModel


@dataclass(frozen=True)
class SwapReport:
    version_id: int
    name: str
    load_s: float  # loading the new version (0 when it came from the cache)
    swap_s: float  # the atomic switch itself
    from_cache: bool


class VersionUnavailable(ValueError):
    """A version that cannot be served (unknown, of another base model, or failing to load)."""


class Registry(Protocol):
    """The part of feedback_store.versions.VersionRegistry the service uses."""

    def get(self, version_id: int) -> Any: ...

    def deployed_id(self, base_model: str) -> int | None: ...

    def list(
        self, base_model: str | None = None, *, statuses: tuple[str, ...] | None = None
    ) -> list[Any]: ...

    def deploy(self, version_id: int, *, allow_rejected: bool = False) -> Any: ...

    def rollback(self, to_version_id: int | None = None, *, base_model: str | None = None) -> Any: ...


class Loader(Protocol):
    base_model: str

    def load(self, version: Any) -> ChatModel: ...

    def close(self) -> None: ...


class ModelService:
    def __init__(
        self,
        model: ChatModel,
        version_id: int,
        name: str,
        *,
        loader: Loader | None = None,
        registry: Registry | None = None,
        cache_size: int = 2,
    ):
        self._lock = threading.Lock()  # guards _served and _cache
        self._load_lock = threading.Lock()  # one version load at a time
        self._served = ServedVersion(version_id, name, model)
        self._cache: OrderedDict[int, ServedVersion] = OrderedDict()
        self.cache_size = max(1, cache_size)
        self.loader = loader
        self.registry = registry
        self.base_model = model.model_id
        self.last_error: str | None = None
        self.last_swap: SwapReport | None = None
        self._failed_version: int | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._active: list[Generation] = []  # generations started here, pruned when they end
        self._last_start = time.monotonic() - 1e9

    @classmethod
    def from_registry(
        cls, loader: Loader, registry: Registry, *, base_version_id: int, cache_size: int = 2
    ) -> ModelService:
        """Serve the registry's deployed version of the loader's base model. If its adapter does not load,
        serve the base version instead and say why in ``last_error`` (the database is left as it is)."""
        deployed_id = registry.deployed_id(loader.base_model) or base_version_id
        row = registry.get(deployed_id)
        error = None
        try:
            model = loader.load(row)
        except ModelLoadError as exc:
            if deployed_id == base_version_id:
                raise
            error = f"deployed version {deployed_id} ({row.name}) cannot be loaded: {exc}"
            log.error("%s; serving the base version %s instead", error, base_version_id)
            row = registry.get(base_version_id)
            model = loader.load(row)
        service = cls(model, row.id, row.name, loader=loader, registry=registry, cache_size=cache_size)
        if error is not None:
            service.last_error = error + f". Serving version {row.id} ({row.name}) instead."
            service._failed_version = deployed_id
        return service

    @property
    def served(self) -> ServedVersion:
        return self._served

    @property
    def model(self) -> ChatModel:
        return self._served.model

    @property
    def version_id(self) -> int:
        return self._served.version_id

    # -- versions ------------------------------------------------------------------------------------
    def available_versions(self) -> list[tuple[int, str]]:
        """(version id, name) of every version this service can generate with: the deployed one first,
        then the registered versions of the same base model that were not rejected."""
        served = self._served
        out = [(served.version_id, served.name)]
        seen = {served.version_id}
        with self._lock:
            cached = [(v.version_id, v.name) for v in self._cache.values()]
        rows: list[tuple[int, str]] = []
        if self.registry is not None and self.loader is not None:
            try:
                rows = [
                    (v.id, v.name)
                    for v in self.registry.list(
                        self.base_model, statuses=("candidate", "deployed", "retired")
                    )
                ]
            except Exception as exc:  # a locked database must not break the UI
                log.warning("cannot list versions: %s", exc)
        for vid, name in cached + rows:
            if vid not in seen:
                seen.add(vid)
                out.append((vid, name))
        return out

    def _lookup(self, version_id: int) -> ServedVersion | None:
        with self._lock:
            if version_id == self._served.version_id:
                return self._served
            hit = self._cache.get(version_id)
            if hit is not None:
                self._cache.move_to_end(version_id)
            return hit

    def _load(self, version_id: int) -> tuple[ServedVersion, float]:
        """Load a version (not cached yet); returns it and the seconds loading took."""
        if self.loader is None or self.registry is None:
            raise VersionUnavailable(
                f"version {version_id} is not loaded and this service has no version registry; "
                f"available: {self.available_versions()}"
            )
        try:
            row = self.registry.get(version_id)
        except ValueError as exc:
            raise VersionUnavailable(str(exc)) from exc
        if row.base_model != self.base_model:
            raise VersionUnavailable(
                f"version {version_id} belongs to {row.base_model!r}; this server serves {self.base_model!r}"
            )
        t0 = time.perf_counter()
        try:
            model = self.loader.load(row)
        except ModelLoadError as exc:
            raise VersionUnavailable(f"version {version_id} ({row.name}) cannot be loaded: {exc}") from exc
        return ServedVersion(row.id, row.name, model), time.perf_counter() - t0

    def _resolve(self, version_id: int | None) -> ServedVersion:
        if version_id is None:
            return self._served  # one read: the whole generation uses this version
        hit = self._lookup(version_id)
        if hit is not None:
            return hit
        with self._load_lock:
            hit = self._lookup(version_id)  # loaded by another request meanwhile
            if hit is not None:
                return hit
            loaded, load_s = self._load(version_id)
            log.info(
                "loaded version %s (%s) for comparison in %.2f s", loaded.version_id, loaded.name, load_s
            )
            self._put_in_cache(loaded)
            return loaded

    def _put_in_cache(self, version: ServedVersion) -> None:
        evicted = []
        with self._lock:
            self._cache[version.version_id] = version
            self._cache.move_to_end(version.version_id)
            while len(self._cache) > self.cache_size:
                evicted.append(self._cache.popitem(last=False)[1])
        for old in evicted:
            self._close_later(old)

    @staticmethod
    def _close_later(version: ServedVersion) -> None:
        # close() waits for the version's running generations, so never on the caller's thread
        threading.Thread(target=version.model.close, name=f"close-v{version.version_id}", daemon=True).start()

    # -- generation ----------------------------------------------------------------------------------
    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, version_id: int | None = None
    ) -> Generation:
        """Start a generation on ``version_id`` (default: the deployed version)."""
        for attempt in range(2):
            served = self._resolve(version_id)
            try:
                generation = served.model.stream(messages, params)
            except GenerationError as exc:
                # The version was closed between resolving and starting (evicted or swapped): once more.
                if attempt == 0 and "unloaded" in str(exc):
                    continue
                raise
            generation.version_id = served.version_id
            return self._track(generation)
        raise GenerationError(
            "the model was swapped twice while starting; try again"
        )  # unreachable in practice

    def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, version_id: int | None = None
    ) -> GenerationResult:
        return self.stream(messages, params, version_id=version_id).wait()

    def stream_n(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        n: int,
        *,
        version_id: int | None = None,
    ) -> list[Generation]:
        """``n`` generations of the same messages on ONE version (a hot swap cannot split them), seeded as
        ``sample_n`` seeds them; the streaming form of :meth:`sample_n`. Raises ValueError for a bad ``n``
        (or n > 1 with greedy decoding); if one cannot start, those already started are cancelled."""
        seeds = sample_seeds(params, n)
        # n == 1 keeps the caller's params: the backend seeds a sampled reply itself, a greedy one needs none
        variants = [params] if n == 1 else [replace(params, seed=s) for s in seeds]
        for attempt in range(2):
            served = self._resolve(version_id)
            generations: list[Generation] = []
            try:
                for variant in variants:
                    generation = served.model.stream(messages, variant)
                    generation.version_id = served.version_id
                    generations.append(self._track(generation))
            except BaseException as exc:
                for g in generations:
                    g.cancel()
                # the version was closed between resolving and starting (evicted or swapped): once more
                if (
                    attempt == 0
                    and not generations
                    and isinstance(exc, GenerationError)
                    and "unloaded" in str(exc)
                ):
                    continue
                raise
            return generations
        raise GenerationError("the model was swapped twice while starting; try again")

    def _track(self, generation: Generation) -> Generation:
        with self._lock:
            self._active = [g for g in self._active if g.running]
            self._active.append(generation)
            self._last_start = time.monotonic()
        return generation

    def seconds_idle(self) -> float:
        """0 while a reply is being generated, else the seconds since the last one started: how long
        the server has been idle (the training scheduler gives training all cores after a while)."""
        with self._lock:
            self._active = [g for g in self._active if g.running]
            return 0.0 if self._active else time.monotonic() - self._last_start

    def sample_n(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        n: int,
        *,
        version_id: int | None = None,
    ) -> list[GenerationResult]:
        served = self._resolve(version_id)
        with self._lock:
            self._last_start = time.monotonic()
        results = served.model.sample_n(messages, params, n)
        for r in results:
            r.version_id = served.version_id
        return results

    # -- swapping ------------------------------------------------------------------------------------
    def swap(self, model: ChatModel, version_id: int, name: str) -> float:
        """Serve ``model`` from now on; returns the seconds the switch itself took. The replaced model is
        closed in the background after its running generations end."""
        t0 = time.perf_counter()
        with self._lock:
            old = self._served
            self._served = ServedVersion(version_id, name, model)
            self._cache.pop(version_id, None)
        elapsed = time.perf_counter() - t0
        if old.model is not model:
            self._close_later(old)
        log.info("now serving version %s (%s); swap took %.3f ms", version_id, name, elapsed * 1000)
        return elapsed

    def activate(self, version_id: int) -> SwapReport:
        """Serve ``version_id`` as the deployed version (serving side only; the database is not written).

        Loads it first (or takes it from the cache); on failure raises VersionUnavailable and the
        current version keeps serving. The replaced version stays in the cache.
        """
        with self._load_lock:
            if version_id == self._served.version_id:
                return SwapReport(version_id, self._served.name, 0.0, 0.0, True)
            with self._lock:
                cached = self._cache.pop(version_id, None)
            if cached is not None:
                new, load_s = cached, 0.0
            else:
                new, load_s = self._load(version_id)
            t0 = time.perf_counter()
            with self._lock:
                old = self._served
                self._served = new
            swap_s = time.perf_counter() - t0
            self._put_in_cache(old)  # still usable for comparisons and instant rollback
        report = SwapReport(new.version_id, new.name, load_s, swap_s, cached is not None)
        self.last_swap = report
        self.last_error = None
        self._failed_version = None
        log.info(
            "now serving version %s (%s): loaded in %.2f s, switched in %.3f ms",
            new.version_id,
            new.name,
            load_s,
            swap_s * 1000,
        )
        return report

    def deploy(self, version_id: int, *, allow_rejected: bool = False) -> SwapReport:
        """Load ``version_id``, record it as deployed in the registry, then switch to it."""
        if self.registry is None:
            raise VersionUnavailable("this service has no version registry")
        self._resolve(version_id)  # load (into the cache) before touching the database
        self.registry.deploy(version_id, allow_rejected=allow_rejected)
        return self.activate(version_id)

    def rollback(self, to_version_id: int | None = None) -> SwapReport:
        """Deploy a version that served before (default: the previous deployed one), then switch to it."""
        if self.registry is None:
            raise VersionUnavailable("this service has no version registry")
        if to_version_id is not None:
            self._resolve(to_version_id)
        row = self.registry.rollback(to_version_id, base_model=self.base_model)
        return self.activate(row.id)

    def sync_with_registry(self) -> SwapReport | None:
        """Serve whatever the registry says is deployed (a deploy or rollback made by another process)."""
        if self.registry is None or self.loader is None:
            return None
        deployed = self.registry.deployed_id(self.base_model)
        if deployed is None or deployed == self._served.version_id or deployed == self._failed_version:
            return None
        try:
            return self.activate(deployed)
        except VersionUnavailable as exc:
            self._failed_version = deployed  # do not retry every poll; a new deploy retries
            self.last_error = f"{exc}. Still serving version {self._served.version_id} ({self._served.name})."
            log.error("%s", self.last_error)
            return None

    def start_watching(self, interval_s: float = 2.0) -> None:
        """Poll the registry every ``interval_s`` seconds in a daemon thread (stopped by close())."""
        if self._watcher is not None or interval_s <= 0:
            return

        def watch() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.sync_with_registry()
                except Exception:  # keep watching whatever happens (a locked database, a bad row)
                    log.exception("version watcher")

        self._watcher = threading.Thread(target=watch, name="version-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        with self._lock:
            models = [self._served.model, *(v.model for v in self._cache.values())]
            self._cache.clear()
        for model in models:
            model.close()
        if self.loader is not None:
            self.loader.close()
