"""The SQLite response store: round trips, deletion, and a writer killed with SIGKILL mid-write
leaving a database that opens and holds only complete responses."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from homeport.services.state.responses_store import ResponseStore

ITEMS = 400  # per response: each write is one large transaction, so a kill likely lands inside one

WRITER = f"""
import sys
from pathlib import Path
from homeport.services.state.responses_store import ResponseStore
store = ResponseStore(Path(sys.argv[1]))
n = 0
while True:
    items = [{{"id": f"msg_{{n}}_{{i}}", "type": "message", "text": "x" * 200}} for i in range({ITEMS})]
    store.put({{"id": f"resp_{{n}}", "created_at": n, "items": {ITEMS}}}, items, items)
    n += 1
    if n == 1:
        print("written", flush=True)
"""


def test_round_trip_and_delete(tmp_path):
    store = ResponseStore(tmp_path / "sub" / "state.db")
    items = [{"id": "msg_1", "type": "message"}, {"id": "msg_2", "type": "message"}]
    store.put({"id": "resp_1", "created_at": 1, "status": "completed"}, items, [*items, {"id": "out"}])
    reopened = ResponseStore(tmp_path / "sub" / "state.db")
    assert reopened.get("resp_1")["status"] == "completed"
    assert [i["id"] for i in reopened.input_items("resp_1")] == ["msg_1", "msg_2"]
    assert reopened.conversation("resp_1")[-1] == {"id": "out"}
    assert reopened.get("resp_2") is None and reopened.input_items("resp_2") is None
    assert reopened.delete("resp_1") and not reopened.delete("resp_1")
    assert reopened.input_items("resp_1") is None
    mode = sqlite3.connect(tmp_path / "sub" / "state.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_background_responses_left_unfinished_end_failed_when_the_store_reopens(tmp_path):
    store = ResponseStore(tmp_path / "state.db")
    store.put({"id": "resp_q", "created_at": 1, "status": "queued", "error": None}, [], [])
    store.put({"id": "resp_r", "created_at": 2, "status": "in_progress", "error": None}, [], [])
    store.put({"id": "resp_c", "created_at": 3, "status": "completed", "error": None}, [], [])
    assert store.get("resp_q")["status"] == "queued"  # the running process leaves its own alone
    reopened = ResponseStore(tmp_path / "state.db")
    for response_id in ("resp_q", "resp_r"):
        body = reopened.get(response_id)
        assert body["status"] == "failed" and body["error"]["code"] == "server_error"
    assert reopened.get("resp_c") == {"id": "resp_c", "created_at": 3, "status": "completed", "error": None}


def test_a_writer_killed_mid_write_leaves_only_complete_responses(tmp_path):
    path = tmp_path / "state.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
        time.sleep(0.3)  # let it get well into later transactions
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = dict(conn.execute("SELECT response_id, COUNT(*) FROM input_items GROUP BY response_id").fetchall())
    ids = [row[0] for row in conn.execute("SELECT id FROM responses")]
    assert ids and all(counts.get(rid) == ITEMS for rid in ids)
    assert set(counts) == set(ids)  # no orphaned items of an unfinished response
    store = ResponseStore(path)
    assert store.get(ids[0])["items"] == ITEMS


def test_items_are_found_by_id_even_in_a_database_from_before_the_index(tmp_path):
    path = tmp_path / "state.db"
    store = ResponseStore(path)
    output = [{"id": "msg_out", "type": "message", "role": "assistant"}]
    store.put({"id": "resp_1", "created_at": 1, "output": output}, [{"id": "msg_in", "type": "message"}], [])
    assert store.item("msg_out") == output[0] and store.item("msg_in")["id"] == "msg_in"
    assert store.item("nope") is None
    store.put({"id": "resp_2", "created_at": 2, "output": [{**output[0], "role": "later"}]}, [], [])
    assert store.item("msg_out")["role"] == "later"  # the latest response's copy
    with sqlite3.connect(path) as conn:  # as an older homeport left it: no output item index
        conn.execute("DROP TABLE output_items")
    assert ResponseStore(path).item("msg_out")["role"] == "later"
    store.delete("resp_2")
    store.delete("resp_1")
    assert store.item("msg_out") is None and store.item("msg_in") is None
