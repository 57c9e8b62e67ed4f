"""Run one function per slide concurrently with Dask, locally or on a cluster.

Locally the slides are ``dask.delayed`` tasks computed by Dask's threaded
scheduler (``workers`` at a time); with a scheduler address they are
submitted to a ``dask.distributed`` cluster and gathered as they complete.
Locally the slides start in the order given (see :class:`_InOrder`).
Either way ``on_result`` is called once per slide, as soon as it finishes,
in the calling process. The function must not raise: it returns a result
describing a failure instead (see :func:`smearscan.pipeline.run_slide_safely`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from smearscan.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def _result_callback(keys: set[Any], on_result: Callable[[Any], None]) -> Any:
    """A Dask local-scheduler hook forwarding each finished slide to ``on_result``."""
    from dask.callbacks import Callback

    class ResultCallback(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key in keys:
                on_result(result)

    return ResultCallback()


class _InOrder(Generic[T, R]):
    """The tasks handed out in their order to whichever Dask task runs next.

    Dask's threaded scheduler starts independent tasks in the order of
    :func:`dask.order.order`, not in the order given (with ``slide-{i}`` keys:
    reverse sorted as text, ``slide-9`` first and ``slide-10`` between
    ``slide-1`` and ``slide-0``). Each Dask task therefore takes the next slide
    here when it starts, so slides start in batch (sorted) order whatever the
    scheduler picks; results carry their index to come back in task order.
    """

    def __init__(self, fn: Callable[[T], R], tasks: Sequence[T]) -> None:
        self._fn, self._tasks = fn, tasks
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, _slot: int) -> tuple[int, R]:
        with self._lock:
            index = self._next
            self._next += 1
        return index, self._fn(self._tasks[index])


def _run_local(
    fn: Callable[[T], R], tasks: Sequence[T], workers: int, on_result: Callable[[R], None]
) -> list[R]:
    import dask  # imported with the first slide to run: a re-run with nothing to do skips it

    run_next = _InOrder(fn, tasks)
    delayed = [
        dask.delayed(run_next, pure=False)(i, dask_key_name=f"slide-{i}") for i in range(len(tasks))
    ]
    keys = {d.key for d in delayed}
    with _result_callback(keys, lambda item: on_result(item[1])):
        indexed = dask.compute(*delayed, scheduler="threads", num_workers=workers)
    results: list[Any] = [None] * len(tasks)
    for index, result in indexed:
        results[index] = result
    return results


def _run_distributed(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    address: str,
    on_result: Callable[[R], None],
    stop: Any = None,
) -> list[R]:
    from distributed import Client, as_completed

    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the dask scheduler at {address}: {exc}") from exc
    with client:
        log.info(
            "sending %d slides to the dask cluster at %s (%d workers)",
            len(tasks),
            address,
            len(client.scheduler_info().get("workers", {})),
        )
        futures = client.map(fn, list(tasks), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        for future in as_completed(futures):
            if stop is not None and stop.requested:  # let running slides finish, drop the rest
                pending = [f for f in futures if f.status == "pending"]
                client.cancel(pending)
                for f in pending:
                    results[index[f.key]] = stop.skipped(tasks[index[f.key]])
            if future.cancelled():
                continue
            result = future.result()
            results[index[future.key]] = result
            on_result(result)
    return results


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    on_result: Callable[[R], None] | None = None,
    stop: Any = None,
) -> list[R]:
    """Apply ``fn`` to every task concurrently; results come back in task order.

    Args:
        fn: Picklable function (for clusters) that returns, never raises.
        tasks: One picklable task per slide.
        workers: Concurrent slides on the local scheduler.
        scheduler: ``tcp://host:port`` of a dask.distributed scheduler, or None.
        on_result: Called in this process with each result as it arrives.
        stop: A :class:`~smearscan.stopping.StopRequest`: on a cluster, slides not
            started when it is set are cancelled and come back skipped (locally
            ``fn`` itself checks it).

    Raises:
        ConfigError: The scheduler cannot be reached.
    """
    callback: Callable[[R], None] = on_result or (lambda _r: None)
    if not tasks:
        return []
    if scheduler:
        return _run_distributed(fn, tasks, scheduler, callback, stop)
    return _run_local(fn, tasks, workers, callback)
