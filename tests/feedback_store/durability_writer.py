"""A writer process for the durability test: THREADS threads write feedback through the store API as
fast as they can and print "ack MESSAGE_ID USER SCORE" after each write returns, until killed.

    python -m tests.feedback_store.durability_writer DB THREADS
"""

from __future__ import annotations

import sys
import threading

from feedback_store.store import FeedbackStore


def main() -> None:
    path, threads = sys.argv[1], int(sys.argv[2])
    store = FeedbackStore(path)
    replies = [
        r["id"] for r in store.db.query("SELECT id FROM messages WHERE role = 'assistant' ORDER BY id")
    ]
    out_lock = threading.Lock()

    def writer(k: int) -> None:
        i = 0
        while True:
            user = f"w{k}-{i // len(replies)}"
            message_id = replies[i % len(replies)]
            score = 1 + i % 7
            store.feedback.record_feedback(message_id, user, thumbs=1, score=score)
            with out_lock:  # one line per acknowledged write, flushed before the next write starts
                sys.stdout.write(f"ack {message_id} {user} {score}\n")
                sys.stdout.flush()
            i += 1

    for k in range(threads):
        threading.Thread(target=writer, args=(k,), daemon=True).start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
