"""Stored Responses in SQLite: each response with its input items and the conversation it ends,
written in one transaction (all of it or none of it), in WAL mode so readers never wait on the
writer. A background response is written when it is queued and again when it ends; opening the
store ends the ones a previous process left unfinished. Every input and output item is also
indexed by its id, for `item_reference` inputs. Calls block: the service runs them in threads;
each opens its own connection."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL,          -- the response object as served
    conversation TEXT NOT NULL   -- every item up to and including its output (previous_response_id)
);
CREATE TABLE IF NOT EXISTS input_items (
    response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE TABLE IF NOT EXISTS output_items (
    response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX IF NOT EXISTS input_items_by_id ON input_items(item_id);
CREATE INDEX IF NOT EXISTS output_items_by_id ON output_items(item_id);
"""


class ResponseStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            new_index = not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'output_items'").fetchone()
            conn.executescript(_SCHEMA)
            if new_index:  # a database from before output items were indexed
                with conn:
                    for response_id, text in conn.execute("SELECT id, body FROM responses").fetchall():
                        conn.executemany(_INSERT_OUTPUT, _item_rows(response_id, json.loads(text).get("output")))
        finally:
            conn.close()
        self._fail_unfinished()

    def _fail_unfinished(self) -> None:
        """Background responses still queued or running belonged to a process that is gone (one
        process owns the store): they end failed, so a poller gets an answer instead of `queued`
        forever."""
        conn = self._connect()
        try:
            with conn:
                rows = conn.execute("SELECT id, body FROM responses "
                                    "WHERE json_extract(body, '$.status') IN ('queued', 'in_progress')").fetchall()
                for response_id, text in rows:
                    body = json.loads(text)
                    body["status"] = "failed"
                    body["error"] = {"code": "server_error",
                                     "message": "The server restarted before this background response finished."}
                    conn.execute("UPDATE responses SET body = ? WHERE id = ?", (json.dumps(body), response_id))
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        return conn

    def put(self, response: dict, input_items: list[dict], conversation: list[dict]) -> None:
        conn = self._connect()
        try:
            with conn:  # one transaction: the response appears whole or not at all
                conn.execute("DELETE FROM responses WHERE id = ?", (response["id"],))
                conn.execute(
                    "INSERT INTO responses (id, created_at, body, conversation) VALUES (?, ?, ?, ?)",
                    (response["id"], response["created_at"], json.dumps(response), json.dumps(conversation)),
                )
                conn.executemany(_INSERT_INPUT, _item_rows(response["id"], input_items))
                conn.executemany(_INSERT_OUTPUT, _item_rows(response["id"], response.get("output")))
        finally:
            conn.close()

    def get(self, response_id: str) -> dict | None:
        row = self._one("SELECT body FROM responses WHERE id = ?", response_id)
        return json.loads(row[0]) if row else None

    def conversation(self, response_id: str) -> list[dict] | None:
        row = self._one("SELECT conversation FROM responses WHERE id = ?", response_id)
        return json.loads(row[0]) if row else None

    def input_items(self, response_id: str) -> list[dict] | None:
        """The response's input items in order; None when there is no such response."""
        conn = self._connect()
        try:
            if conn.execute("SELECT 1 FROM responses WHERE id = ?", (response_id,)).fetchone() is None:
                return None
            rows = conn.execute(
                "SELECT body FROM input_items WHERE response_id = ? ORDER BY position", (response_id,)
            ).fetchall()
        finally:
            conn.close()
        return [json.loads(row[0]) for row in rows]

    def item(self, item_id: str) -> dict | None:
        """The stored input or output item with this id (the latest response's, should two hold it)."""
        row = self._one(
            "SELECT body FROM ("
            " SELECT o.body, r.created_at FROM output_items o JOIN responses r ON r.id = o.response_id"
            " WHERE o.item_id = ?1 UNION ALL"
            " SELECT i.body, r.created_at FROM input_items i JOIN responses r ON r.id = i.response_id"
            " WHERE i.item_id = ?1"
            ") ORDER BY created_at DESC LIMIT 1",
            item_id,
        )
        return json.loads(row[0]) if row else None

    def delete(self, response_id: str) -> bool:
        conn = self._connect()
        try:
            with conn:
                return conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
        finally:
            conn.close()

    def _one(self, sql: str, *args) -> tuple | None:
        conn = self._connect()
        try:
            return conn.execute(sql, args).fetchone()
        finally:
            conn.close()


_INSERT_INPUT = "INSERT INTO input_items (response_id, position, item_id, body) VALUES (?, ?, ?, ?)"
_INSERT_OUTPUT = "INSERT INTO output_items (response_id, position, item_id, body) VALUES (?, ?, ?, ?)"


def _item_rows(response_id: str, items: list[dict] | None) -> list[tuple]:
    return [(response_id, i, item["id"], json.dumps(item)) for i, item in enumerate(items or []) if "id" in item]
