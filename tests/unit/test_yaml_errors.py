"""The one line a bad experiment file gives: the file once, then the line (and column) of what is wrong.

Syntax errors come as ``FILE:LINE:COLUMN: what`` from the parser's mark; refused keys and values as
``FILE: dotted.path: what (line N)``, found from the node marks of the composed document; a value given
by ``--set`` says so instead of a line. The comparison of two experiments (``config_diff``) is checked here
too, since ``experiment add`` and ``experiment diff`` show it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pipeline.configs import ConfigError
from pipeline.experiments import config_diff, effective_form, load_experiment, parse_experiment
from pipeline.yaml_errors import key_lines, line_of
from tests.factories import cli_argv, tiny_experiment

REPO = Path(__file__).parents[2]
VIT = (REPO / "experiments" / "vit_demo.yaml").read_text()


def _line_number(text: str, fragment: str) -> int:
    """1-based line of the first line of ``text`` containing ``fragment``."""
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


def _error_line(tmp_path: Path, text: str, overrides: list[str] | None = None, name: str = "exp.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path, overrides)
    line = err.value.located(path)
    assert "\n" not in line and line.count(str(path)) == 1, line  # one line, the file named once
    return line.replace(str(path), name)


def test_a_syntax_error_names_file_line_and_column(tmp_path):
    text = VIT.replace("      dim: 32", "      dim: [32")
    line = _error_line(tmp_path, text)
    number = _line_number(text, "dim: [32")
    assert re.fullmatch(rf"exp\.yaml:{number + 1}:\d+: .+", line), line
    assert "<unicode string>" not in line and "not valid YAML" not in line

    tab = VIT.replace("      dim: 32", "\tdim: 32")
    assert _error_line(tmp_path, tab).startswith(f"exp.yaml:{_line_number(tab, 'dim: 32')}:1: ")


def test_an_unknown_key_names_its_path_and_line(tmp_path):
    text = VIT.replace("      dim: 32", "      dimm: 32")
    line = _error_line(tmp_path, text)
    assert line == f"exp.yaml: model.config.vit.dimm: unknown key (line {_line_number(text, 'dimm')})", line


def test_a_bad_value_names_its_path_and_line(tmp_path):
    text = VIT.replace("init_sigma: 0.14", "init_sigma: many")
    line = _error_line(tmp_path, text)
    number = _line_number(text, "init_sigma: many")
    assert re.fullmatch(rf"exp\.yaml: model\.config\.init_sigma: .*'many'.* \(line {number}\)", line), line


def test_several_problems_each_get_their_line(tmp_path):
    text = VIT.replace("heads: 4", "heads: four").replace(
        "gamma_readout: 0.48", "gamma_readout: 0.48\n    foo: 1"
    )
    line = _error_line(tmp_path, text)
    assert "model.config.vit.heads: " in line and f"(line {_line_number(text, 'heads: four')})" in line
    assert f"model.config.foo: unknown key (line {_line_number(text, 'foo: 1')})" in line


def test_a_missing_key_points_at_its_section(tmp_path):
    text = VIT.replace("  fn: sensorium.models.modulated_vit_core_full_gauss_readout\n", "")
    line = _error_line(tmp_path, text)
    assert line == f"exp.yaml: model.fn: Field required (line {_line_number(text, 'model:')})", line


def test_an_unknown_builder_is_named_by_its_path(tmp_path):
    text = VIT.replace("sensorium.training.standard_trainer", "sensorium.training.nope")
    line = _error_line(tmp_path, text)
    assert line.startswith("exp.yaml: trainer.fn: unknown builder 'sensorium.training.nope'; registered: ")
    assert line.endswith(f"(line {_line_number(text, 'sensorium.training.nope')})")


def test_a_value_from_set_says_so_instead_of_a_line(tmp_path):
    line = _error_line(tmp_path, VIT, ["model.config.vit.heads=four"])
    assert re.fullmatch(r"exp\.yaml: model\.config\.vit\.heads: .* \(from --set\)", line), line


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        # values YAML itself cannot build: found by building each one, placed by its node's mark
        ("dim: 32", "dim: 2020-13-45", r"model\.config\.vit\.dim: month must be in 1\.\.12"),
        ("rank: true", "rank: !!bool maybe", r"dataset\.config\.regressors\.rank: 'maybe' is not a bool"),
        ("rank: true", "rank: !!python/name:os.system ''", r"dataset\.config\.regressors\.rank: could not "),
    ],
)
def test_a_value_yaml_cannot_build_names_line_column_and_path(tmp_path, old, new, expect):
    text = VIT.replace(old, new)
    line = _error_line(tmp_path, text)
    assert re.fullmatch(rf"exp\.yaml:{_line_number(text, new)}:\d+: {expect}.*", line), line


def test_a_refused_value_names_its_path_and_line(tmp_path):
    text = VIT.replace("init_sigma: 0.14", "init_sigma: .nan")
    line = _error_line(tmp_path, text)
    number = _line_number(text, ".nan")
    assert (
        line
        == f"exp.yaml: model.config.init_sigma: .nan is not allowed; give a finite number (line {number})"
    )


def test_checks_of_the_document_keep_their_line(tmp_path):
    text = VIT.replace("      dim: 32", "      dim: 32\n      dim: 48")
    line = _error_line(tmp_path, text)
    assert line.startswith(f"exp.yaml: line {_line_number(text, 'dim: 48')}: the key 'dim' appears twice"), (
        line
    )


def test_unreadable_files_name_the_file_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_experiment(tmp_path / "missing.yaml")
    assert err.value.located("missing.yaml") == "missing.yaml: cannot read: No such file or directory"
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_experiment(tmp_path / "latin1.yaml")
    assert err.value.located("latin1.yaml").startswith("latin1.yaml: not UTF-8 text (byte 0xe9")


def test_key_lines_follow_sequences_merges_and_aliases():
    text = "base: &b\n  a: 1\n  b: [1, 2]\nother:\n  <<: *b\n  c:\n    - x: 1\n    - y: 2\n"
    lines = key_lines(text)
    assert lines["base.a"] == 2 and lines["base.b"] == 3 and lines["base.b.1"] == 3
    assert lines["other.c.1"] == 8 and lines["other.c.1.y"] == 8
    assert line_of(lines, "other.c.0.z") == 7  # a missing key: where its mapping starts
    assert line_of(lines, "nowhere.x") is None
    assert key_lines("a: [") == {} and key_lines(None) == {}


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    # a database port nobody listens on: a refused file must be refused before any connection
    env = {"PATH": "/usr/bin:/bin", "DJ_HOST": "127.0.0.1", "DJ_PORT": "1", "HOME": str(cwd)}
    return subprocess.run(cli_argv(*argv), cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("command", ["add", "diff"])
def test_the_command_line_shows_one_located_line(tmp_path, command):
    (tmp_path / "bad.yaml").write_text(VIT.replace("      dim: 32", "      dim: [32"))
    (tmp_path / "typo.yaml").write_text(VIT.replace("      dim: 32", "      dimm: 32"))
    syntax = _cli("experiment", command, "bad.yaml", cwd=tmp_path)
    typo = _cli("experiment", command, "typo.yaml", cwd=tmp_path)
    for done, pattern in (
        (syntax, r"error: bad\.yaml:\d+:\d+: [^:]+"),
        (typo, r"error: typo\.yaml: model\.config\.vit\.dimm: unknown key \(line \d+\)"),
    ):
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stdout + done.stderr
        assert re.fullmatch(pattern, done.stdout.strip()), done.stdout


# -- comparing two experiments -------------------------------------------------------------------------------


def test_identical_experiments_have_no_difference():
    spec = parse_experiment(tiny_experiment("a"))
    assert config_diff(effective_form(spec), effective_form(spec)) == []
    # a default written out is the same experiment as the default left out
    written = tiny_experiment("a")
    written["model"]["config"]["gamma_input"] = effective_form(spec)["model"]["config"]["gamma_input"]
    assert config_diff(effective_form(spec), effective_form(parse_experiment(written))) == []


def test_differences_are_listed_path_by_path():
    old = tiny_experiment("a", seeds=(1, 2))
    new = tiny_experiment("a", seeds=(1, 3))
    new["model"]["config"]["hidden_channels"] = 6
    new["ensemble"] = {"comment": "mean"}
    new["comment"] = "changed"
    lines = config_diff(effective_form(parse_experiment(old)), effective_form(parse_experiment(new)))
    assert "model.config.hidden_channels: 4 -> 6" in lines
    assert "seeds: [1, 2] -> [1, 3]" in lines
    assert "comment: '' -> 'changed'" in lines
    assert "ensemble.comment: added ('mean')" in lines and "ensemble: added (null)" not in lines
    assert config_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == ["a.c: removed (was 2)"]
    assert config_diff({"m": [{"seed": 1}]}, {"m": [{"seed": 2}]}) == ["m.0.seed: 1 -> 2"]


def test_set_values_yaml_cannot_read_are_one_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(VIT)
    for item, expect in (
        ("model.config.vit.dim=!!bool maybe", "not valid YAML: 'maybe' is not a bool"),
        ("name=\udced\udca0", "not UTF-8 text"),  # what the shell hands over for bytes it cannot decode
    ):
        with pytest.raises(ConfigError) as err:
            load_experiment(path, [item])
        assert str(err.value).startswith("--set ") and str(err.value).endswith(expect), str(err.value)


def test_an_unknown_name_is_one_line_with_close_matches_first():
    from usecases.queries import KNOWN_SHOWN, unknown_name_message

    assert unknown_name_message("scan", ["1-2-3"], ["4-5-6"]) == "unknown scan '1-2-3' (known: 4-5-6)"
    assert unknown_name_message("experiment", ["x"], []).startswith(
        "unknown experiment 'x' (none is stored yet"
    )
    many = [f"trial{i:03d}" for i in range(40)] + ["demo_vit"]
    line = unknown_name_message("experiment", ["demo_vitt"], many)
    assert line.startswith("unknown experiment 'demo_vitt' (known: demo_vit, trial000, ")
    assert line.count(",") == KNOWN_SHOWN - 1 and line.endswith(" and 29 more: `sensorium experiment list`)")
