"""The connection layer's write queue and background checkpoints."""

import threading
import time

from feedback_store.db import FifoLock
from feedback_store.store import FeedbackStore


def test_fifo_lock_hands_over_in_arrival_order():
    lock = FifoLock()
    order = []
    threads = []
    with lock:
        for k in range(5):
            t = threading.Thread(target=lambda k=k: (lock.__enter__(), order.append(k), lock.__exit__()))
            t.start()
            threads.append(t)
            deadline = time.monotonic() + 10
            while len(lock._waiters) < k + 1 and time.monotonic() < deadline:  # queued before the next
                time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]
    with lock:  # free again
        pass


def test_checkpoints_happen_in_the_background(tmp_path):
    path = tmp_path / "c.db"
    store = FeedbackStore(path)
    try:
        before = path.stat().st_size
        conv = store.create_conversation("u")
        for i in range(200):  # far below the writers' own auto-checkpoint threshold
            store.add_message(conv, "user", "x" * 2000 + str(i))
        deadline = time.monotonic() + 10
        while path.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > before  # pages were copied from the WAL into the file
        assert any(t.name == "checkpoint-c.db" for t in threading.enumerate())
    finally:
        store.close()
    assert not any(t.name == "checkpoint-c.db" for t in threading.enumerate())
