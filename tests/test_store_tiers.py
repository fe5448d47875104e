"""The run database (atomic records, no double judging, one-line errors) and the tier policy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kernelevo.candidate import Candidate
from kernelevo.evaluate.verdict import Evaluation, SizeResult, Verdict
from kernelevo.propose.tiers import TierPolicy, TierState
from kernelevo.store import CallRecord, Store, StoreError


def ev(verdict: Verdict = Verdict.CORRECT, speedup: float | None = 1.5) -> Evaluation:
    return Evaluation("c", verdict, "" if verdict is Verdict.CORRECT else "wrong at size 0", "cpu",
                      "cpu-interpreter", (SizeResult({"n": 3}, 0.0, 0.0, 1.0, 0.01, 1.5, 1),), speedup)


def test_candidate_lifecycle_and_state_are_atomic(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as st:
        cid = st.add_candidate(Candidate("src", model="m", prompt_kind="improve"), "llm", "d1")
        assert [c.id for c in st.candidates("pending")] == [cid]
        st.record_evaluation(cid, ev(), "cell-a", {"archive": {"x": 1}})
        with pytest.raises(StoreError, match="evaluated twice"):
            st.record_evaluation(cid, ev(), "cell-a", {"archive": {"x": 2}})
        assert st.state("archive") == {"x": 1}  # the failed second record changed nothing
        c = st.candidate(cid)
        assert c is not None and c.status == "done" and c.evaluation == ev() and c.cell == "cell-a"
        assert st.find_digest("d1") == cid and st.count_done() == 1


def test_failures_and_usage(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as st:
        a = st.add_candidate(Candidate("a"), "seed", "a")
        st.record_evaluation(a, ev(), None, {})
        st.add_candidate(Candidate("b", parent_id=a), "llm", "b", evaluation=ev(Verdict.INCORRECT, None))
        st.add_candidate(Candidate("c"), "llm", "c", evaluation=ev(Verdict.REJECTED, None))
        assert [c.source for c in st.recent_failures(5, parent_id=a)] == ["b"]
        assert [c.source for c in st.recent_failures(5)] == ["c", "b"]
        st.add_call(CallRecord("m1", "cheap", "improve", 100, 20, 0.5, True, 1.0, 1))
        st.add_call(CallRecord("m1", "cheap", "improve", 50, 10, 0.25, True, 1.0, 2, "RateLimitError"))
        st.add_call(CallRecord("m2", "strong", "rethink", 10, 1, 0.0, False, 2.0, 1))
        u = st.llm_usage()
    assert u["calls"] == 3 and u["cost_usd"] == pytest.approx(0.75)
    assert u["by_model"]["m1"] == {"calls": 2, "failed_calls": 1, "tokens_in": 150, "tokens_out": 30,
                                   "cost_usd": 0.75, "priced": True, "mean_latency_s": 1.0}
    assert not u["by_model"]["m2"]["priced"]


def test_not_a_database_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.db"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        Store(bad)
    assert "not a kernelevo run database" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_strong_share_is_a_quota_and_stagnation_calls_the_strong_model() -> None:
    policy = TierPolicy(strong_share=0.1, stagnation=5, fix_share=0.0)
    rng = random.Random(0)
    state = TierState()
    tiers = []
    for n in range(30):
        choice, state = policy.choose(state, evaluated=n, rng=rng, have_elites=True, have_failures=False)
        state = policy.improved(state, n)  # always improving: no stagnation
        tiers.append(choice.tier)
    assert tiers.count("strong") == 3 and tiers[9] == "strong" and tiers[0] == "cheap"
    # Stagnation: no new best for 5 evaluations brings the strong model in, asking for a rethink.
    state = TierState(proposals=1, best_at=0)
    choice, state = TierPolicy(0.0, stagnation=5).choose(state, 5, rng, have_elites=True, have_failures=False)
    assert (choice.tier, choice.kind) == ("strong", "rethink") and state.strong_at == 5
    choice, _ = TierPolicy(0.0, stagnation=5).choose(state, 6, rng, have_elites=True, have_failures=False)
    assert choice.tier == "cheap"  # not again until another window passes
    assert TierState.from_dict(state.to_dict()) == state


def test_without_elites_the_cheap_model_writes_or_fixes() -> None:
    policy = TierPolicy(0.0, stagnation=0)
    rng = random.Random(1)
    c, _ = policy.choose(TierState(), 0, rng, have_elites=False, have_failures=False)
    assert c.kind == "write"
    c, _ = policy.choose(TierState(), 0, rng, have_elites=False, have_failures=True)
    assert c.kind == "fix"



# -- files the user gives as --db ----------------------------------------------------------------------

def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_programs_files_are_refused_and_left_untouched(tmp_path) -> None:
    import sqlite3

    from kernelevo.store import Store, StoreError

    theirs = tmp_path / "app.sqlite"
    db = sqlite3.connect(theirs)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    before = _sha(theirs)
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    for path, says in ((theirs, "another program"), (text, "not an SQLite file")):
        for kw in ({}, {"readonly": True}, {"lock": True}):
            with pytest.raises(StoreError, match=says):
                Store(path, **kw)
    assert _sha(theirs) == before and text.read_text() == "not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite", "notes.db"]  # no -wal, -shm, .lock


def test_unwritable_places_are_one_true_line(tmp_path, monkeypatch) -> None:
    import os

    from kernelevo.store import Store, StoreError

    run = tmp_path / "run.db"
    with Store(run) as s:
        s.set_meta({"problem": "p"})
    real = os.access
    # Root ignores file modes, so the modes a user would meet are simulated at os.access.
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(run) else real(p, mode))
    with pytest.raises(StoreError, match="read-only; copy it somewhere writable"):
        Store(run)
    with Store(run, readonly=True) as s:  # show still reads it
        assert s.meta()["problem"] == "p"
    locked = tmp_path / "ro"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real(p, mode))
    with pytest.raises(StoreError, match=f"cannot write in {locked}"):
        Store(locked / "new.db")
    with pytest.raises(StoreError, match=f"cannot create the folder {locked / 'a' / 'b'}: {locked} is not writable"):
        Store(locked / "a" / "b" / "new.db")
    assert sorted(p.name for p in locked.iterdir()) == []
    with pytest.raises(StoreError, match="no such run database"):
        Store(tmp_path / "absent.db", readonly=True)


def test_a_database_in_use_by_a_live_run_is_refused_until_it_ends(tmp_path) -> None:
    import os

    from kernelevo.store import Store, StoreError

    db = tmp_path / "run.db"
    first = Store(db, lock=True)
    with pytest.raises(StoreError, match=f"in use by another kernelevo run \\(pid {os.getpid()}\\)"):
        Store(db, lock=True)
    with Store(db, readonly=True):
        pass  # reading a live run is fine
    first.close()
    Store(db, lock=True).close()  # released with its holder
