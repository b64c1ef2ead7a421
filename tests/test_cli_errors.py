"""User mistakes across commands: one ``Error:`` line, exit 1, naming the key or option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from simscope.cli import cli
from simscope.storage import slug


@pytest.fixture()
def config_dir(tmp_path: Path, hh_records: list[dict[str, str]]) -> Path:
    with open(tmp_path / "prefs.jsonl", "w") as f:
        for r in hh_records[:20]:
            f.write(json.dumps(r) + "\n")
    (tmp_path / "corpus.txt").write_text("Some text here.\n\nAnd another paragraph of text.\n")
    (tmp_path / "rm.csv").write_text("model,metric,score\na,accuracy,0.6\n")
    return tmp_path


def _run(config_dir: Path, toml: str) -> list[str]:
    (config_dir / "c.toml").write_text(toml)
    result = CliRunner().invoke(cli, ["--quiet", "run", str(config_dir / "c.toml")])
    assert result.exit_code == 1, result.output
    return result.output.strip().splitlines()


CANDIDATE = '[[candidates]]\nname = "a"\ncorpus = "corpus.txt"\n'
PREFS = '[preferences]\npath = "prefs.jsonl"\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "seed = -1\n" + PREFS + CANDIDATE,
            "seed: expected an integer in [0, 4294967295], found -1",
        ),
        (
            f"seed = {2**63}\n" + PREFS + CANDIDATE,
            f"seed: expected an integer in [0, 4294967295], found {2**63}",
        ),
        (
            PREFS + '[[candidates]]\nname = "a"\ncorpus = "corpus.txt"\nn_docs = 0\n',
            "candidates[0].n_docs: expected >= 1 (or leave it out), found 0",
        ),
        (
            PREFS + CANDIDATE + '[[candidates]]\nname = " "\ncorpus = "corpus.txt"\n',
            "candidates[1].name: expected a non-empty candidate name, found ' '",
        ),
        (
            '[preferences]\npath = "prefs.jsonl"\nschema = "csv"\n' + CANDIDATE,
            "preferences.schema: expected one of ['auto', 'pairs', 'hh', 'trl'], found 'csv'",
        ),
        (
            PREFS + CANDIDATE + "[generation]\nn_docs = 0\n",
            "generation.n_docs: expected >= 1, found 0",
        ),
        (
            PREFS + CANDIDATE + '[lexical]\nnum_perm = "many"\n',
            "lexical.num_perm: expected an integer, found 'many'",
        ),
        (
            PREFS + CANDIDATE + "[lexical]\nseed = 5\n",
            "lexical.seed: a run has one seed, the top-level `seed`, that reaches every random "
            "step; found lexical.seed = 5: remove it and set seed = 5 at the top",
        ),
        (
            PREFS + CANDIDATE + "[generation]\nseed = 7\n",
            "generation.seed: a run has one seed, the top-level `seed`, that reaches every random "
            "step; found generation.seed = 7: remove it and set seed = 7 at the top",
        ),
        (
            PREFS + '[[candidates]]\nname = "a"\ncorpus = "corpus.txt"\ntrust_remote_code = 1\n',
            "candidates[0].trust_remote_code: expected true or false, found 1",
        ),
    ],
)
def test_run_config_mistakes_name_the_toml_key(config_dir: Path, toml: str, message: str) -> None:
    assert _run(config_dir, toml) == [f"Error: {config_dir / 'c.toml'}: {message}"]


@pytest.mark.parametrize("command", ["select", "profile", "demo"])
@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_out_of_range_is_refused_by_every_command(
    config_dir: Path, command: str, seed: str
) -> None:
    args = {
        "select": ["select", "--rm-results", str(config_dir / "rm.csv"), "--target", "accuracy"],
        "profile": [
            "profile",
            "--prefs",
            str(config_dir / "prefs.jsonl"),
            "--corpus",
            f"a={config_dir / 'corpus.txt'}",
            "-o",
            str(config_dir / "p.parquet"),
        ],
        "demo": ["demo", "--dir", str(config_dir / "demo")],
    }[command]
    result = CliRunner().invoke(cli, ["--quiet", *args, "--seed", seed])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295."
    )
    assert not (config_dir / "p.parquet").exists() and not (config_dir / "demo").exists()


def test_clicks_own_path_checks_exit_1_like_every_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = CliRunner().invoke(cli, ["run", str(missing)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for 'CONFIG': File '{missing}' does not exist."
    )
    unknown = CliRunner().invoke(cli, ["profile", "--no-such-option"])
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines()[-1] == "Error: No such option '--no-such-option'."


def test_slugs_are_one_per_name() -> None:
    names = ["org/model", "org--model", "org~2Fmodel", "a b", "a_b", ".hidden", "..", "Ünï", "x"]
    slugs = [slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    assert slug("Qwen/Qwen3-0.6B") == "Qwen~2FQwen3-0.6B"
    assert slug("org--model") == "org--model"
    assert all("/" not in s and not s.startswith(".") for s in slugs)
    long = ["m" * 300 + "a", "m" * 300 + "b"]
    assert len({slug(n) for n in long}) == 2 and all(len(slug(n)) <= 120 for n in long)
