"""A queue of ready batches filled by a background thread (FIELDS W05/W06, SimpleTuner's
`dataloader_prefetch`): the next batches are collated while the GPU trains on the current one, so a slow
disk or a slow collate does not stall a step. Same batches, same order; only the waiting moves."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_END = object()


def prefetched(batches: Iterable, depth: int) -> Iterator:
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(err)

    worker = threading.Thread(target=fill, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped early (max steps, STOP): let the thread end
        stop.set()
        worker.join(timeout=5)
