"""The search loop end to end, against a real OpenAI-compatible server on loopback (litellm unmocked)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelevo.problem import load_problem
from kernelevo.run import open_run
from kernelevo.settings import Settings
from kernelevo.store import Store
from tests.conftest import CANDIDATES, PROBLEMS, ROOT, closed_port, kill_when_judged
from tests.llm_server import ScriptedServer, fenced

GOOD = (CANDIDATES / "softmax_good.py").read_text()
# Off by a constant in the denominator: runs, launches its kernel, and is wrong everywhere.
WRONG = GOOD.replace("e / tl.sum(e, axis=0)", "e / (tl.sum(e, axis=0) + 1.0)")
assert WRONG != GOOD


def variant(k: int) -> str:
    """A correct softmax that differs in its text (a distinct candidate)."""
    return GOOD.replace("row = tl.program_id(0)", f"row = tl.program_id(0)  # variant {k}")


def settings(url: str, tmp_path: Path, **search: object) -> Settings:
    # The scripted replies are the same program with another comment (``variant``): novelty
    # rejection would turn them all away, so it is off here and tested on its own.
    s = Settings().updated({
        "llm": {"model": "openai/cheap", "strong_model": "openai/strong", "api_base": url, "backoff_s": 0.05},
        "search": {"budget": 6, "concurrency": 2, "novelty": 0.0, **search},
        "eval": {"timeout_s": 60.0},
        "execute": {"workers": 1},  # one worker: the order of evaluations is the order of proposals
    })
    return s


def run_search(s: Settings, db: Path, problem: str = "softmax_small.py", seed: str | None = None):
    prob = load_problem(PROBLEMS / problem)
    with open_run(prob, "cpu", s, db, seed, "seed.py") as run:
        return run.search()


def test_failure_feedback_reaches_a_later_prompt_and_both_tiers_are_used(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"  # preflight
        if body["model"].endswith("strong"):
            return fenced(variant(100 + i), "A different algorithm.")
        return fenced(WRONG) if i <= 2 else fenced(variant(i))

    with ScriptedServer(script) as srv:
        summary = run_search(settings(srv.url, tmp_path, budget=7, strong_share=0.3, concurrency=1),
                             tmp_path / "run.db")
        prompts = srv.prompts()
        models = [r["model"] for r in srv.requests if r.get("max_tokens") != 1]
    assert summary.evaluated == 7 and summary.stop_reason.startswith("budget")
    with Store(tmp_path / "run.db") as store:
        cands = store.candidates()
    wrong = [c for c in cands if c.verdict == "incorrect"]
    assert wrong, [c.verdict for c in cands]
    # The wrong kernel's reason (which size and draw failed, by how much) is shown to a later prompt.
    later = [p for p in prompts if wrong[0].reason in p]
    assert later, wrong[0].reason
    assert {"cheap", "strong"} <= {m.split("/")[-1] for m in models}  # litellm strips "openai/"
    strong = [c for c in cands if c.model == "openai/strong"]
    assert strong and all(c.prompt_kind in ("rethink", "write", "fix") for c in strong)
    assert any("fundamentally different algorithm" in p for p in prompts)
    assert all(c.model and c.prompt_kind for c in cands)  # every candidate says who made it and how
    assert summary.best_id is not None and summary.best_speedup == 1.0 and not summary.speed_measured


def test_unusable_replies_become_failed_candidates_with_reasons(tmp_path: Path) -> None:
    replies = ["Sorry, I can only describe the idea.", fenced(GOOD.replace("class ModelNew", "class Model")),
               fenced("def broken(:\n    pass\nclass ModelNew: pass")]

    served: list[int] = []

    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"
        served.append(i)
        n = len(served) - 1
        return replies[n] if n < len(replies) else fenced(variant(i))

    with ScriptedServer(script) as srv:
        run_search(settings(srv.url, tmp_path, budget=4, concurrency=1, strong_share=0.0), tmp_path / "run.db")
    with Store(tmp_path / "run.db") as store:
        cands = store.candidates()
    assert [c.verdict for c in cands[:3]] == ["rejected", "rejected", "compile_error"]
    assert "code block" in cands[0].reason and "ModelNew" in cands[1].reason and "line 1" in cands[2].reason
    assert [c.note for c in cands[:3]] == ["unusable reply", "unusable reply", "syntax error"]
    assert cands[2].source == "def broken(:\n    pass\nclass ModelNew: pass\n"  # the module, for a fix prompt
    assert cands[3].verdict == "correct"


def test_max_cost_stops_the_run_and_every_call_is_counted(tmp_path: Path) -> None:
    calls = []

    def script(body: dict, i: int) -> str:
        calls.append(i)
        return "OK" if body.get("max_tokens") == 1 else fenced(variant(i))

    # $1 per prompt token: each proposal costs hundreds of dollars, so the limit stops the run early.
    s = settings("", tmp_path, budget=20, concurrency=1, max_cost_usd=1500.0, strong_share=0.0)
    s = s.updated({"prices": {"openai/cheap": {"input_per_mtok": 1e6, "output_per_mtok": 0.0},
                              "openai/strong": {"input_per_mtok": 1e6}}})
    with ScriptedServer(script) as srv:
        s = s.updated({"llm": {"api_base": srv.url}})
        summary = run_search(s, tmp_path / "run.db")
    assert summary.stop_reason.startswith("cost limit") and summary.evaluated < 20
    with Store(tmp_path / "run.db") as store:
        usage = store.llm_usage()
    assert usage["calls"] == len(calls)  # the preflight and drained calls included
    assert usage["cost_usd"] >= 1500.0 and usage["by_model"]["openai/cheap"]["priced"]


def test_resume_restores_archive_normalisation_and_tiers(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str:
        return "OK" if body.get("max_tokens") == 1 else fenced(variant(i))

    db = tmp_path / "run.db"
    with ScriptedServer(script) as srv:
        s = settings(srv.url, tmp_path, budget=4, concurrency=1, warmup=2)
        run_search(s, db)
        with Store(db) as store:
            saved = {k: store.state(k) for k in ("strategy", "rng")}
            done = {c.id: c.evaluation for c in store.candidates("done")}
        from kernelevo.propose.proposer import Proposer
        from kernelevo.search import Search

        with Store(db) as store:
            search = Search(store, lambda c: None, Proposer("", "cpu", None, None, None, None), s.search, 2)
            assert saved["strategy"]["name"] == "map-elites" and saved["strategy"]["state"]["archive"]["cells"]
            assert json.loads(json.dumps(search.strategy.to_dict())) == saved["strategy"]["state"]
            assert json.loads(json.dumps(search.rng.getstate())) == saved["rng"]
        summary = run_search(s.updated({"search": {"budget": 6}}), db)
    assert summary.evaluated == 6
    with Store(db) as store:
        after = {c.id: c.evaluation for c in store.candidates("done")}
    assert {k: after[k] for k in done} == done  # nothing judged before was judged again


def test_offline_tuner_finds_correct_variants_of_the_seed(tmp_path: Path) -> None:
    prob = load_problem(ROOT / "kernels" / "gelu" / "problem.py")
    seed = (ROOT / "kernels" / "gelu" / "seed.py").read_text()
    s = Settings().updated({"search": {"budget": 4}})
    with open_run(prob, "cpu", s, tmp_path / "run.db", seed, "kernels/gelu/seed.py") as run:
        summary = run.search()
    assert summary.evaluated == 4
    with Store(tmp_path / "run.db") as store:
        cands = store.candidates()
        usage = store.llm_usage()
    assert cands[0].origin == "seed" and cands[0].verdict == "correct"
    tuned = [c for c in cands if c.origin == "tuner"]
    assert len(tuned) == 3 and all(c.parent_id is not None and "->" in (c.note or "") for c in tuned)
    assert any(c.verdict == "correct" for c in tuned)
    assert len({c.digest for c in cands}) == 4  # no variant tried twice
    assert usage["calls"] == 0


def kernelevo(*args: str, drop_env: tuple[str, ...] = (), **kw) -> subprocess.Popen:
    if args[:1] == ("optimize",) and "--workers" not in args and "--help" not in args:
        args = (*args, "--workers", "1")  # the tests' one worker (conftest: one_worker_by_default)
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env.update({"TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)})
    return subprocess.Popen([sys.executable, "-m", "kernelevo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True, **kw)


def test_bad_key_stops_before_any_work(tmp_path: Path) -> None:
    with ScriptedServer(lambda body, i: {"status": 401, "error": "invalid api key"}) as srv:
        p = kernelevo("optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap",
                      "--api-base", srv.url, "--db", str(tmp_path / "run.db"), "--device", "cpu")
        out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "AuthenticationError" in err and "openai/cheap" in err
    with Store(tmp_path / "run.db") as store:
        assert store.candidates() == []


def test_sigkill_then_resume_loses_nothing_and_judges_nothing_twice(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str | dict:
        return "OK" if body.get("max_tokens") == 1 else {"content": fenced(variant(i)), "delay": 0.2}

    db = tmp_path / "run.db"
    args = ["optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap", "--db", str(db),
            "--device", "cpu", "--budget", "8", "--concurrency", "3"]
    with ScriptedServer(script) as srv:
        p = kernelevo(*args, "--api-base", srv.url)
        kill_when_judged(p, db, 3)
        with Store(db) as store:
            before = {c.id: (c.verdict, c.evaluation, c.digest) for c in store.candidates("done")}
            pending_ids = [c.id for c in store.candidates("pending")]
            calls_before = store.llm_usage()["calls"]
        assert len(before) >= 3
        p = kernelevo(*args, "--api-base", srv.url)
        out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    with Store(db) as store:
        after = store.candidates()
        assert store.llm_usage()["calls"] >= calls_before
    assert all(c.status == "done" for c in after) and len(after) == 8
    assert {c.id: (c.verdict, c.evaluation, c.digest) for c in after if c.id in before} == before
    assert all(any(c.id == pid for c in after) for pid in pending_ids)  # pending ones were judged on resume
    evaluated = [c.digest for c in after if c.note != "unusable reply" and "identical to" not in (c.reason or "")]
    assert len(evaluated) == len(set(evaluated))


def test_show_json_has_the_promised_fields(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str:
        return "OK" if body.get("max_tokens") == 1 else fenced(WRONG if i == 2 else variant(i))  # 0, 1: preflights

    with ScriptedServer(script) as srv:
        run_search(settings(srv.url, tmp_path, budget=3, concurrency=1, strong_share=0.0), tmp_path / "run.db")
        n_requests = len(srv.requests)
    r = subprocess.run([sys.executable, "-m", "kernelevo", "show", str(tmp_path / "run.db"), "--json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["problem"] == "softmax_small" and report["device"] == "cpu"
    assert report["best"] is not None and report["best"]["verdict"] == "correct"
    for c in report["candidates"]:
        assert {"id", "parent_id", "model", "verdict", "reason", "speedup", "source", "cell", "seed", "hybrid",
                "torch_share"} <= set(c)
        assert c["hybrid"] is False and isinstance(c["seed"], int)  # every evaluation's draw, to reproduce it
    assert [c["verdict"] for c in report["candidates"]].count("incorrect") == 1
    llm = report["llm"]
    assert llm["calls"] == n_requests and set(llm["by_model"]) == {"openai/cheap", "openai/strong"}
    cheap = llm["by_model"]["openai/cheap"]
    assert {"calls", "tokens_in", "tokens_out", "cost_usd"} <= set(cheap) and cheap["tokens_in"] > 0
    human = subprocess.run([sys.executable, "-m", "kernelevo", "show", str(tmp_path / "run.db")],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert human.returncode == 0 and "openai/cheap" in human.stdout


def test_show_of_a_missing_database_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "kernelevo", "show", str(tmp_path / "nope.db")],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such run database" in r.stderr


@pytest.mark.parametrize(("flag", "says"), [
    ("--budget=-5", "--budget must be at least 1, got -5"), ("--strategy=greedy", "--strategy must be"),
    ("--concurrency=0", "--concurrency must be at least 1, got 0"), ("--max-cost=-1", "--max-cost must be 0 or more"),
    ("--set=dim=abc", "dim is a number in the file"),
    ("--set=dimm=4", "no global 'dimm' in the file; did you mean dim"),
])
def test_bad_optimize_options_are_one_line_naming_the_wrong_one(tmp_path: Path, flag: str, says: str) -> None:
    p = kernelevo("optimize", str(PROBLEMS / "softmax_small.py"), "--seed-kernel", str(CANDIDATES / "softmax_good.py"),
                  "--db", str(tmp_path / "r.db"), flag)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and err.strip().count("\n") == 0, err
    assert says in err
    if not flag.startswith("--budget"):
        assert "--budget" not in err  # only the wrong option is named
    assert not (tmp_path / "r.db").exists()  # bad input changes nothing


def test_sample_strategy_always_starts_from_the_seed(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str:
        return "OK" if body.get("max_tokens") == 1 else fenced(variant(i))

    with ScriptedServer(script) as srv:
        run_search(settings(srv.url, tmp_path, budget=5, concurrency=2, strategy="sample", strong_share=0.25),
                   tmp_path / "run.db", seed=variant(0))
        prompts = srv.prompts()
    with Store(tmp_path / "run.db") as store:
        cands = store.candidates()
    assert cands[0].origin == "seed"
    assert all(c.parent_id == cands[0].id and c.prompt_kind == "sample" for c in cands[1:])
    assert len(prompts) >= 4 and all("# Seed kernel" in p and "# Inspiration" not in p for p in prompts[2:])


def test_edit_replies_apply_to_the_parent_or_fail_with_a_reason(tmp_path: Path) -> None:
    good_edit = ("<<<<<<< SEARCH\n    row = tl.program_id(0)\n=======\n    row = tl.program_id(0)  # edited\n"
                 ">>>>>>> REPLACE\n")
    bad_edit = "<<<<<<< SEARCH\n    this line is not in the parent\n=======\n    x = 1\n>>>>>>> REPLACE\n"
    served: list[int] = []

    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"
        served.append(i)
        return [bad_edit, good_edit][len(served) - 1] if len(served) <= 2 else fenced(variant(i))

    s = settings("", tmp_path, budget=3, concurrency=1, strong_share=0.0, fix_share=0.0)
    with ScriptedServer(script) as srv:
        run_search(s.updated({"llm": {"api_base": srv.url}}), tmp_path / "run.db", seed=GOOD)
    with Store(tmp_path / "run.db") as store:
        seed, bad, good = store.candidates()[:3]
    assert bad.verdict == "rejected" and "edit 1" in bad.reason and bad.parent_id == seed.id
    assert good.verdict == "correct" and "# edited" in good.source and good.parent_id == seed.id


def test_max_time_stops_the_run_cleanly(tmp_path: Path) -> None:
    prob = load_problem(ROOT / "kernels" / "gelu" / "problem.py")
    seed = (ROOT / "kernels" / "gelu" / "seed.py").read_text()
    s = Settings().updated({"search": {"budget": 1000, "max_time_s": 3.0}})
    with open_run(prob, "cpu", s, tmp_path / "run.db", seed, "seed.py") as run:
        summary = run.search()
    assert summary.stop_reason.startswith("time limit") and 1 <= summary.evaluated < 1000
    assert summary.elapsed_s < 3.0 + 30  # stops after the evaluation in flight, not at the budget
    with Store(tmp_path / "run.db") as store:
        assert store.candidates("pending") == [] or all(c.origin == "tuner" for c in store.candidates("pending"))


@pytest.mark.parametrize("how", ["refused", "no key"])
def test_a_model_that_cannot_work_stops_the_run_in_seconds(tmp_path: Path, how: str) -> None:
    """No server at --api-base, or no credentials for the provider: one line, exit 2, before any work."""
    args = ["--api-base", f"http://127.0.0.1:{closed_port()}/v1"] if how == "refused" else []
    env_drop = ("OPENAI_API_KEY", "KERNELEVO_API_KEY")
    t0 = time.monotonic()
    p = kernelevo("optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/gpt-4o-mini", *args,
                  "--db", str(tmp_path / "run.db"), "--device", "cpu", drop_env=env_drop)
    out, err = p.communicate(timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "openai/gpt-4o-mini" in line
    assert ("connection refused" in line) if how == "refused" else ("OPENAI_API_KEY" in line)
    assert took < 60  # seconds of imports, not minutes of retries
    with Store(tmp_path / "run.db") as store:
        assert store.candidates() == []


def test_a_run_whose_models_keep_failing_exits_3_and_says_what_to_fix(tmp_path: Path) -> None:
    # The preflight is answered; every later call is a server error.
    with ScriptedServer(lambda body, i: "OK" if i == 0 else {"status": 500, "error": "boom"}) as srv:
        cfg = tmp_path / "k.toml"
        cfg.write_text('[llm]\nretries = 0\nbackoff_s = 0.01\n[search]\nbudget = 50\n')
        p = kernelevo("optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap",
                      "--api-base", srv.url, "--db", str(tmp_path / "run.db"), "--device", "cpu",
                      "--config", str(cfg))
        out, err = p.communicate(timeout=300)
    assert p.returncode == 3, (out, err)
    assert "model calls in a row failed" in out and "models kept failing" in err and "--db" in err


def test_the_user_gets_the_best_kernel_and_is_told_about_resuming(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    args = ("optimize", str(PROBLEMS / "softmax_small.py"), "--seed-kernel", str(CANDIDATES / "softmax_good.py"),
            "--db", str(db), "--device", "cpu", "--budget", "2")
    p = kernelevo(*args)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert f"kernelevo show {db} --source best --out best_kernel.py" in out
    p = kernelevo("show", str(db), "--source", "best")
    shown, _ = p.communicate(timeout=60)
    report = Store(db, readonly=True)
    try:
        best = max((c for c in report.candidates() if c.verdict == "correct"), key=lambda c: c.speedup or 0)
    finally:
        report.close()
    assert shown == best.source
    target = tmp_path / "best.py"
    p = kernelevo("show", str(db), "--out", str(target))
    _, err = p.communicate(timeout=60)
    assert target.read_text() == best.source and f"candidate #{best.id} written to {target}" in err
    p = kernelevo("show", str(db), "--source", "99")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "no candidate #99" in err
    with Store(db, readonly=True) as s:
        done = sum(c.status == "done" for c in s.candidates())
    p = kernelevo(*args[:-1], "3")  # the same --db: a resumed run says so
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and f"kernelevo: resuming {db}: {done} evaluated, 0 pending" in err, err


def test_ctrl_c_says_how_to_resume(tmp_path: Path) -> None:
    def script(body: dict, i: int) -> str | dict:
        return "OK" if body.get("max_tokens") == 1 else {"content": fenced(variant(i)), "delay": 0.5}

    with ScriptedServer(script) as srv:
        p = kernelevo("optimize", str(PROBLEMS / "softmax_small.py"), "--model", "openai/cheap", "--api-base",
                      srv.url, "--db", str(tmp_path / "run.db"), "--device", "cpu", "--budget", "500")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(srv.requests) < 3:
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Resume with: kernelevo optimize" in err and f"--db {tmp_path / 'run.db'}" in err


def test_a_proposal_too_close_to_a_correct_kernel_is_not_judged_and_the_next_prompt_says_why(tmp_path: Path) -> None:
    prompts: list[str] = []

    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"
        prompts.append(body["messages"][-1]["content"])
        return fenced(variant(i))  # the seed again, with another comment: the same program

    db = tmp_path / "run.db"
    with ScriptedServer(script) as srv:
        s = settings(srv.url, tmp_path, budget=5, concurrency=1, novelty=0.98, fix_share=0.0, strong_share=0.0)
        run_search(s, db, seed=(CANDIDATES / "softmax_good.py").read_text())
    with Store(db) as store:
        cands = store.candidates()
    rejected = [c for c in cands if c.note == "not novel"]
    assert rejected and all(c.verdict == "rejected" and c.evaluation is not None for c in rejected)
    import re

    assert re.match(r"too close to candidate #\d+ \(100% of its tokens, constants aside\): not judged",
                    rejected[0].reason), rejected[0].reason
    assert all(c.evaluation.sizes == () for c in rejected)  # never reached the evaluator
    assert any("too close to candidate #" in p for p in prompts)  # a later prompt shows why


def test_the_bandit_shifts_calls_toward_the_model_whose_candidates_improve(tmp_path: Path) -> None:
    asked: list[str] = []

    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"
        asked.append(body["model"])
        return fenced(variant(i)) if body["model"] == "good" else fenced(WRONG)

    db = tmp_path / "run.db"
    with ScriptedServer(script) as srv:
        s = settings(srv.url, tmp_path, budget=12, concurrency=1).updated(
            {"llm": {"model": "openai/bad", "models": ["openai/good"], "strong_model": "", "chooser": "bandit"}})
        run_search(s, db, seed=GOOD)
        with Store(db) as store:
            arms = store.state("models")
    assert set(asked) == {"good", "bad"}  # both were tried
    assert asked.count("good") >= 2 * asked.count("bad"), asked
    assert arms["openai/good"][2] > 0 and arms["openai/bad"][2] == 0  # gains: correct candidates only from good


def test_a_tier_ensemble_draws_every_model_of_the_tier(tmp_path: Path) -> None:
    asked: list[str] = []

    def script(body: dict, i: int) -> str:
        if body.get("max_tokens") == 1:
            return "OK"
        asked.append(body["model"])
        return fenced(variant(i))

    with ScriptedServer(script) as srv:
        s = settings(srv.url, tmp_path, budget=9, concurrency=1, strong_share=0.0).updated(
            {"llm": {"model": "openai/a", "models": ["openai/b", "openai/c"], "strong_model": ""}})
        run_search(s, tmp_path / "run.db", seed=GOOD)
    assert set(asked) == {"a", "b", "c"}, asked
