"""The model service: which version is deployed, and the one place generations start.

Swapping versions is atomic: new requests go to the new model at once, generations already running
finish on the old one, and the old one is freed in the background when they are done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from models.base import ChatMessage, ChatModel, Generation, GenerationResult, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedVersion:
    version_id: int
    name: str
    model: ChatModel


class ModelService:
    def __init__(self, model: ChatModel, version_id: int, name: str):
        self._lock = threading.Lock()
        self._served = ServedVersion(version_id, name, model)

    @property
    def served(self) -> ServedVersion:
        return self._served

    @property
    def model(self) -> ChatModel:
        return self._served.model

    @property
    def version_id(self) -> int:
        return self._served.version_id

    def available_versions(self) -> list[tuple[int, str]]:
        """(version id, name) of every version this service can generate with right now."""
        served = self._served
        return [(served.version_id, served.name)]

    def _resolve(self, version_id: int | None) -> ServedVersion:
        served = self._served  # one read: the whole generation uses this version
        if version_id is None or version_id == served.version_id:
            return served
        raise ValueError(f"version {version_id} is not loaded; available: {self.available_versions()}")

    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, version_id: int | None = None
    ) -> Generation:
        """Start a generation on ``version_id`` (default: the deployed version)."""
        served = self._resolve(version_id)
        generation = served.model.stream(messages, params)
        generation.version_id = served.version_id
        return generation

    def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, version_id: int | None = None
    ) -> GenerationResult:
        return self.stream(messages, params, version_id=version_id).wait()

    def sample_n(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        n: int,
        *,
        version_id: int | None = None,
    ) -> list[GenerationResult]:
        served = self._resolve(version_id)
        results = served.model.sample_n(messages, params, n)
        for r in results:
            r.version_id = served.version_id
        return results

    def swap(self, model: ChatModel, version_id: int, name: str) -> float:
        """Serve ``model`` from now on; returns the seconds the switch itself took."""
        t0 = time.perf_counter()
        with self._lock:
            old = self._served
            self._served = ServedVersion(version_id, name, model)
        elapsed = time.perf_counter() - t0
        if old.model is not model:
            threading.Thread(target=old.model.close, name="close-old-model", daemon=True).start()
        log.info("now serving version %s (%s); swap took %.3f ms", version_id, name, elapsed * 1000)
        return elapsed

    def close(self) -> None:
        self._served.model.close()
