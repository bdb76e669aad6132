"""Dynamic batching of translate requests: ``TranslationBatcher``.

Requests wait in a queue; a worker takes the oldest, waits ``max_delay`` seconds for others to arrive, and
searches the lines of every waiting request with the same settings (beam, nbest) in one ``Translator.search``
call, up to ``max_tokens`` source pieces per batch (a request larger than the budget goes alone). The search
runs in one worker thread per model, so the event loop keeps serving. Each request gets exactly its own rows:
``Translator.search`` sorts by length and pads, and its results do not depend on which sentences share a
batch. If a batched search fails, each request of the batch is searched alone, so a request that breaks the
model fails alone and the others are answered.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from transduce.server.metrics import Metrics
from transduce.translate import Translator

Output = list[str] | list[list[tuple[str, float]]]
"""Per line: the best translation (nbest 1), or the n best (text, score) pairs."""


@dataclass
class _Job:
    lines: list[str]
    beam: int
    nbest: int
    tokens: int
    future: asyncio.Future = field(repr=False)


class TranslationBatcher:
    """Translate requests of one model, batched. ``start()`` in the running loop, then ``await translate(...)``."""

    def __init__(self, translator: Translator, *, max_delay: float = 0.005, max_tokens: int = 4096,
                 batched: bool = True, metrics: Metrics | None = None) -> None:
        self.translator = translator
        self.max_delay, self.max_tokens, self.batched = max_delay, max_tokens, batched
        self.metrics = metrics or Metrics()
        self._jobs: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.searches = 0  # Translator.search calls made (batches, and requests retried alone)

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="translate")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._jobs.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def translate(self, lines: list[str], *, beam: int | None = None, nbest: int = 1) -> Output:
        """The translations of ``lines`` (as ``Translator.translate``, or ``translate_nbest`` when nbest > 1)."""
        assert self._wake is not None, "start() the batcher in the running event loop first"
        if not lines:
            return []
        beam = self.translator.config.decode.beam if beam is None else beam
        tokens = sum(len(ids) + 1 for ids in self.translator.tokenizers.src.encode(lines))
        future = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(lines, max(beam, nbest), nbest, tokens, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            if self.batched and self.max_delay > 0:
                await asyncio.sleep(self.max_delay)  # let concurrent requests join
            batch = self._take()
            if not self._jobs:
                self._wake.clear()
            if batch:
                await self._search(batch)

    def _take(self) -> list[_Job]:
        """The oldest waiting request and (batching) the later ones with its settings that fit the budget."""
        if not self._jobs:
            return []
        first = self._jobs[0]
        batch, budget = [first], first.tokens
        if self.batched:
            for job in self._jobs[1:]:
                if (job.beam, job.nbest) == (first.beam, first.nbest) and budget + job.tokens <= self.max_tokens:
                    batch.append(job)
                    budget += job.tokens
        taken = {id(job) for job in batch}
        self._jobs = [job for job in self._jobs if id(job) not in taken]
        return batch

    async def _search(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        lines = [line for job in batch for line in job.lines]
        started = time.perf_counter()
        try:
            rows = await loop.run_in_executor(self._executor, self._rows, lines, batch[0].beam, batch[0].nbest)
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others: retry each alone
            if len(batch) == 1:
                _settle(batch[0], error=err)
                return
            for job in batch:
                await self._search([job])
            return
        self.metrics.observe("transduce_translate_batch_lines", len(lines), bounds=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.metrics.observe("transduce_translate_search_seconds", time.perf_counter() - started)
        at = 0
        for job in batch:
            _settle(job, rows[at : at + len(job.lines)])
            at += len(job.lines)

    def _rows(self, lines: list[str], beam: int, nbest: int) -> Output:
        """One search, as ``transduce translate`` runs it (in the worker thread)."""
        self.searches += 1
        hyps = self.translator.search(lines, beam=beam, nbest=nbest)
        decode = self.translator.tokenizers.tgt.decode
        if nbest == 1:
            return [decode([row[0].tokens])[0] for row in hyps]
        return [list(zip(decode([h.tokens for h in row]), [h.score for h in row], strict=True)) for row in hyps]


def _settle(job: _Job, rows: Output | None = None, error: Exception | None = None) -> None:
    if job.future.done():  # the client went away
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(rows)
