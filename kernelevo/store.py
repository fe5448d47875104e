"""One SQLite file per run: candidates, their evaluations, every model call, and the search state.

Only the controller's main thread writes. Each evaluation is recorded together with the
archive and tier state it produced, in one transaction, so a run killed at any moment
resumes exactly where its last committed evaluation left it: candidates proposed but not yet
judged are ``pending`` and are judged on resume; none is judged twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Evaluation

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    tier TEXT NOT NULL,
    prompt_kind TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    priced INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES candidates(id),
    origin TEXT NOT NULL,            -- seed | llm | tuner
    model TEXT,
    prompt_kind TEXT,
    call_id INTEGER REFERENCES llm_calls(id),
    language TEXT NOT NULL,
    source TEXT NOT NULL,
    digest TEXT NOT NULL,
    note TEXT,                       -- the tuner's change, or why a reply could not be used
    status TEXT NOT NULL,            -- pending | done
    verdict TEXT,
    reason TEXT,
    speedup REAL,
    evaluation TEXT,                 -- Evaluation.to_json()
    cell TEXT,
    created REAL NOT NULL,
    evaluated REAL
);
CREATE INDEX IF NOT EXISTS candidates_digest ON candidates(digest);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
-- a candidate judged on several GPU types (--gpu-types): each type's own evaluation
CREATE TABLE IF NOT EXISTS per_type (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    gpu_type TEXT NOT NULL,
    worker TEXT NOT NULL,
    gpu_key TEXT NOT NULL,           -- the judging GPU's fingerprint key: where an export of this type goes
    evaluation TEXT NOT NULL,        -- Evaluation.to_json()
    PRIMARY KEY (candidate_id, gpu_type)
);
"""


class StoreError(ValueError):
    """A run database that cannot be used; the message is one line."""


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing. A WAL database in a folder we cannot write has no shared-
    memory file to open: read it as immutable then (no writer can be running there anyway)."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)


def _check_ours(path: Path) -> None:
    """Refuse, without writing anything, a file that is not a kernelevo run database."""
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise StoreError(f"{path}: not a kernelevo run database (not an SQLite file); give a new --db path")
    try:
        db = _read_only(path)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            ours = {"meta", "candidates", "llm_calls", "state"} <= tables and db.execute(
                "SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone() is not None
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: cannot read it as a run database ({e})") from None
    if not ours:
        raise StoreError(f"{path}: an SQLite database of another program, not a kernelevo run; it was left "
                         "untouched; give a new --db path")


def _check_writable(path: Path, existing: bool) -> None:
    """The run writes the database and, in WAL mode, two files beside it: say which cannot be written."""
    folder = path.parent
    nearest = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if not folder.exists():
        if nearest is not None and not os.access(nearest, os.W_OK | os.X_OK):
            raise StoreError(f"{path}: cannot create the folder {folder}: {nearest} is not writable")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{path}: cannot create the folder {folder} ({e.strerror})") from None
    if existing and not os.access(path, os.W_OK):
        raise StoreError(f"{path}: the run database is read-only; copy it somewhere writable to resume it "
                         "(kernelevo show reads it as it is)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"{path}: cannot write in {folder} (the database and its journal live there)")


def _lock(path: Path) -> int:
    """An exclusive lock on ``<db>.lock`` for this process's life; a StoreError naming the holder if taken."""
    import fcntl

    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StoreError(f"{path}: in use by another kernelevo run (pid {holder}); wait for it, or give another "
                         "--db") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


@dataclass(frozen=True)
class StoredCandidate:
    id: int
    parent_id: int | None
    origin: str
    model: str | None
    prompt_kind: str | None
    language: str
    source: str
    digest: str
    note: str | None
    status: str
    verdict: str | None
    reason: str | None
    speedup: float | None
    evaluation: Evaluation | None
    cell: str | None

    def as_candidate(self) -> Candidate:
        return Candidate(self.source, name=f"#{self.id}", language=self.language,  # type: ignore[arg-type]
                         parent_id=self.parent_id, model=self.model, prompt_kind=self.prompt_kind)


@dataclass(frozen=True)
class CallRecord:
    model: str
    tier: str
    prompt_kind: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    priced: bool
    latency_s: float
    attempts: int
    error: str | None = None


class Store:
    """The run database. ``Store(path)`` creates or opens it; use as a context manager."""

    def __init__(self, path: str | Path, readonly: bool = False, lock: bool = False):
        """``readonly``: for reading a run (``show``), nothing written. ``lock``: held for the
        run's life, so a second run on the same database is refused (released if the process dies)."""
        self.path = Path(path)
        self._lock_fd: int | None = None
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a run database")
        existing = self.path.is_file() and self.path.stat().st_size > 0
        if existing:
            _check_ours(self.path)  # before any write: another program's file stays byte for byte
        elif readonly:
            raise StoreError(f"{self.path}: no such run database")
        if not readonly:
            _check_writable(self.path, existing)
        if lock:
            self._lock_fd = _lock(self.path)
        try:
            if readonly:
                self._db = _read_only(self.path)
                self._db.row_factory = sqlite3.Row
                version = self.meta().get("schema_version")
            else:
                # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _tx).
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
                self._db.row_factory = sqlite3.Row
                # WAL survives SIGKILL of the writer with every committed transaction intact.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(_SCHEMA)  # idempotent: a kill half-way is harmless
                version = self.meta().get("schema_version")
        except sqlite3.OperationalError as e:
            self._unlock()
            raise StoreError(f"{self.path}: cannot open the run database ({e})") from None
        except sqlite3.DatabaseError as e:
            self._unlock()
            raise StoreError(f"{self.path}: not a kernelevo run database ({e})") from None
        if version is None and not readonly:
            self.set_meta({"schema_version": SCHEMA_VERSION})
        elif version != SCHEMA_VERSION:
            self._unlock()
            raise StoreError(f"{self.path}: run database schema {version}, this kernelevo reads {SCHEMA_VERSION}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta and state --------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in values.items()])

    def state(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row["value"])

    # -- model calls -------------------------------------------------------------------------
    def add_call(self, call: CallRecord) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO llm_calls (model, tier, prompt_kind, tokens_in, tokens_out, cost_usd, priced, "
                "latency_s, attempts, error, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (call.model, call.tier, call.prompt_kind, call.tokens_in, call.tokens_out, call.cost_usd,
                 int(call.priced), call.latency_s, call.attempts, call.error, time.time()),
            )
            return int(cur.lastrowid)

    def cost_usd(self) -> float:
        return float(self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_calls").fetchone()[0])

    def llm_usage(self) -> dict[str, Any]:
        """Totals and per-model calls, tokens and dollars."""
        by_model: dict[str, Any] = {}
        for r in self._db.execute(
            "SELECT model, COUNT(*) AS calls, SUM(tokens_in) AS ti, SUM(tokens_out) AS tout, SUM(cost_usd) AS cost, "
            "MIN(priced) AS priced, SUM(error IS NOT NULL) AS failed, SUM(latency_s) AS lat FROM llm_calls "
            "GROUP BY model ORDER BY model"
        ):
            by_model[r["model"]] = {
                "calls": r["calls"], "failed_calls": r["failed"], "tokens_in": r["ti"], "tokens_out": r["tout"],
                "cost_usd": round(r["cost"], 6), "priced": bool(r["priced"]),
                "mean_latency_s": round(r["lat"] / r["calls"], 3),
            }
        return {
            "calls": sum(m["calls"] for m in by_model.values()),
            "cost_usd": round(sum(m["cost_usd"] for m in by_model.values()), 6),
            "by_model": by_model,
        }

    # -- candidates --------------------------------------------------------------------------
    def add_candidate(
        self,
        cand: Candidate,
        origin: str,
        digest: str,
        call_id: int | None = None,
        note: str | None = None,
        evaluation: Evaluation | None = None,
        state_after: Callable[[int], dict[str, Any]] | None = None,
    ) -> int:
        """Insert a candidate: ``pending``, or already ``done`` when ``evaluation`` is given
        (a reply that never reached the evaluator, e.g. one with no code). ``state_after(id)`` gives
        the search state once the search has learnt of it, saved in the same transaction."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO candidates (parent_id, origin, model, prompt_kind, call_id, language, source, digest, "
                "note, status, created) VALUES (?,?,?,?,?,?,?,?,?, 'pending', ?)",
                (cand.parent_id, origin, cand.model, cand.prompt_kind, call_id, cand.language, cand.source,
                 digest, note, time.time()),
            )
            cid = int(cur.lastrowid)
            if evaluation is not None:
                self._finish(db, cid, evaluation, None)
                if state_after is not None:
                    db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                                   [(k, json.dumps(v)) for k, v in state_after(cid).items()])
            return cid

    def save_state(self, state: dict[str, Any]) -> None:
        """Search state that changed without an evaluation (a plan arrived)."""
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", [(k, json.dumps(v)) for k, v in state.items()])

    def record_evaluation(self, cid: int, evaluation: Evaluation, cell: str | None, state: dict[str, Any],
                          per_type: tuple[tuple[str, str, str, Evaluation], ...] = ()) -> None:
        """The evaluation and the search state it produced, atomically; ``per_type``: (GPU type,
        worker, GPU key, evaluation) for a candidate judged on several types."""
        with self._tx() as db:
            self._finish(db, cid, evaluation, cell)
            for gpu_type, worker, key, ev in per_type:
                d = ev.to_json()
                d.pop("log", None)
                db.execute("INSERT INTO per_type VALUES (?, ?, ?, ?, ?)", (cid, gpu_type, worker, key, json.dumps(d)))
            db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                           [(k, json.dumps(v)) for k, v in state.items()])

    @staticmethod
    def _finish(db: sqlite3.Connection, cid: int, ev: Evaluation, cell: str | None) -> None:
        d = ev.to_json()
        d.pop("log", None)
        n = db.execute(
            "UPDATE candidates SET status='done', verdict=?, reason=?, speedup=?, evaluation=?, cell=?, evaluated=? "
            "WHERE id=? AND status='pending'",
            (ev.verdict.value, ev.reason, ev.speedup, json.dumps(d), cell, time.time(), cid),
        ).rowcount
        if n != 1:
            raise StoreError(f"candidate #{cid} is not pending: it would be evaluated twice")

    def per_type(self, cid: int | None = None) -> dict[int, dict[str, tuple[str, Evaluation]]]:
        """Candidate id -> GPU type -> (GPU key, its evaluation there), for runs with --gpu-types."""
        q = "SELECT candidate_id, gpu_type, gpu_key, evaluation FROM per_type" + (
            " WHERE candidate_id = ?" if cid else "")
        try:
            rows = self._db.execute(q, (cid,) if cid else ()).fetchall()
        except sqlite3.OperationalError:  # a read-only database made before the table existed
            return {}
        out: dict[int, dict[str, Evaluation]] = {}
        for r in rows:
            out.setdefault(r["candidate_id"], {})[r["gpu_type"]] = (
                r["gpu_key"], Evaluation.from_json(json.loads(r["evaluation"])))
        return out

    def candidates(self, status: str | None = None) -> list[StoredCandidate]:
        q = "SELECT * FROM candidates" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [_stored(r) for r in self._db.execute(q, (status,) if status else ())]

    def candidate(self, cid: int) -> StoredCandidate | None:
        row = self._db.execute("SELECT * FROM candidates WHERE id = ?", (cid,)).fetchone()
        return None if row is None else _stored(row)

    def seed(self) -> StoredCandidate | None:
        row = self._db.execute("SELECT * FROM candidates WHERE origin = 'seed' ORDER BY id LIMIT 1").fetchone()
        return None if row is None else _stored(row)

    def has_candidates(self) -> bool:
        return self._db.execute("SELECT 1 FROM candidates LIMIT 1").fetchone() is not None

    def find_digest(self, digest: str) -> int | None:
        row = self._db.execute("SELECT id FROM candidates WHERE digest = ? ORDER BY id LIMIT 1", (digest,)).fetchone()
        return None if row is None else int(row["id"])

    def correct_sources(self, limit: int = 200) -> list[tuple[int, str]]:
        """(id, source) of the correct candidates, fastest first (the ones a new proposal is compared with)."""
        rows = self._db.execute("SELECT id, source FROM candidates WHERE status = 'done' AND verdict = 'correct' "
                                "ORDER BY speedup DESC, id LIMIT ?", (limit,))
        return [(int(r[0]), r[1]) for r in rows]

    def digests(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT digest FROM candidates")}

    def count_done(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM candidates WHERE status = 'done'").fetchone()[0])

    def verdict_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._db.execute(
            "SELECT verdict, COUNT(*) FROM candidates WHERE status = 'done' GROUP BY verdict")}

    def judged_times(self) -> dict[int, float]:
        """Candidate id -> when it was judged (epoch seconds), for every judged candidate."""
        return {int(r[0]): float(r[1]) for r in self._db.execute(
            "SELECT id, evaluated FROM candidates WHERE status = 'done' AND evaluated IS NOT NULL")}

    def call_times(self) -> list[tuple[float, float]]:
        """(when made, dollars) of every model call, preflight and failed ones included, oldest first."""
        return [(float(r[0]), float(r[1])) for r in self._db.execute(
            "SELECT created, cost_usd FROM llm_calls ORDER BY created, id")]

    def candidate_cost(self, cid: int) -> float:
        """Dollars of the model call that wrote candidate ``cid`` (0 for the seed and tuner moves)."""
        row = self._db.execute("SELECT l.cost_usd FROM candidates c JOIN llm_calls l ON l.id = c.call_id "
                               "WHERE c.id = ?", (cid,)).fetchone()
        return float(row[0]) if row else 0.0

    def recent_failures(self, limit: int, parent_id: int | None = None) -> list[StoredCandidate]:
        """The newest judged candidates that were not correct (of one parent, when given)."""
        q = "SELECT * FROM candidates WHERE status = 'done' AND verdict != 'correct'"
        args: tuple[Any, ...] = ()
        if parent_id is not None:
            q += " AND parent_id = ?"
            args = (parent_id,)
        return [_stored(r) for r in self._db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit))]


def _stored(r: sqlite3.Row) -> StoredCandidate:
    ev = Evaluation.from_json(json.loads(r["evaluation"])) if r["evaluation"] else None
    return StoredCandidate(
        r["id"], r["parent_id"], r["origin"], r["model"], r["prompt_kind"], r["language"], r["source"], r["digest"],
        r["note"], r["status"], r["verdict"], r["reason"], r["speedup"], ev, r["cell"],
    )
