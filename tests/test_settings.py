"""Settings: TOML loading with clear one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelevo.settings import ENV_CONFIG, EvalSettings, Settings, SettingsError


def test_defaults_and_toml(tmp_path: Path) -> None:
    assert Settings.load(None).eval == EvalSettings()
    cfg = tmp_path / "k.toml"
    cfg.write_text("[eval]\ntimeout_s = 5\ncpu_reps = 7\nallow_tf32 = true\n")
    s = Settings.load(cfg)
    assert (s.eval.timeout_s, s.eval.cpu_reps, s.eval.allow_tf32) == (5.0, 7, True)
    assert s.eval.seed == EvalSettings().seed


def test_environment_variable_names_the_file(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text("[eval]\nseed = 9\n")
    monkeypatch.setenv(ENV_CONFIG, str(cfg))
    assert Settings.load().eval.seed == 9


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[eval]\ntimeout = 5\n", "unknown setting eval.timeout"),
        ("[eval]\ncpu_reps = 'many'\n", "eval.cpu_reps must be int"),
        ("[search]\nx = 1\n", "unknown setting search.x"),
        ("[bogus]\nx = 1\n", "unknown setting(s) bogus"),
        ("[eval\n", "not valid TOML"),
    ],
)
def test_bad_settings(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as info:
        Settings.load(cfg)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_search_llm_and_prices_tables(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('[search]\nbudget = 12\nstrong_share = 0.2\n[llm]\nmodel = "openai/q"\n'
                   '[prices."openai/q"]\ninput_per_mtok = 1\noutput_per_mtok = 2.5\n')
    s = Settings.load(cfg)
    assert (s.search.budget, s.search.strong_share, s.llm.model) == (12, 0.2, "openai/q")
    assert (s.prices["openai/q"].input_per_mtok, s.prices["openai/q"].output_per_mtok) == (1.0, 2.5)
    # Command-line options override the file; None means "not given".
    s2 = s.with_options("search", budget=3, max_cost_usd=None)
    assert s2.search.budget == 3 and s2.search.strong_share == 0.2
    with pytest.raises(SettingsError, match=r'prices\."openai/q"\.input_per_mtok must be float'):
        s.updated({"prices": {"openai/q": {"input_per_mtok": "cheap"}}})
