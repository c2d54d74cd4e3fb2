"""A second process that holds a database's write lock on demand (tests/test_busy.py).

`python -m tests.workers.lock_holder DB` reads one command a line from stdin: `hold S` takes
`BEGIN IMMEDIATE` (waiting as long as it must), prints `held`, keeps the lock for S seconds,
commits and prints `released`. It imports nothing but sqlite3, so it starts at once.
"""

from __future__ import annotations

import sqlite3
import sys
import time


def main(argv: list[str]) -> int:
    conn = sqlite3.connect(argv[0], isolation_level=None, timeout=60)
    for command in sys.stdin:
        verb, seconds = command.split()
        assert verb == "hold", command
        conn.execute("BEGIN IMMEDIATE")
        print("held", flush=True)
        time.sleep(float(seconds))
        conn.execute("COMMIT")
        print("released", flush=True)
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
