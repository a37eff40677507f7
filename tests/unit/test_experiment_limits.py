"""Bounded parsing of experiment files (issue 26): alias bombs, oversized and non-UTF-8 files, duplicate
keys, ``.nan`` / ``.inf``, bad seeds and absurd sizes are refused with one line naming what was wrong,
before anything is expanded, allocated or inserted."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import yaml_io
from pipeline.configs import MAX_CORE_PARAMETERS, BaselineModelConfig, ConfigError, validate
from pipeline.experiments import MAX_SEED, apply_overrides, load_experiment, parse_experiment
from pipeline.registry import resolve
from pipeline.yaml_io import MAX_BYTES, MAX_DEPTH, MAX_NODES, loads_yaml, read_yaml_file
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]
EXPERIMENTS = REPO / "experiments"
DEMO_TEXT = (EXPERIMENTS / "demo.yaml").read_text()
DEMO = yaml.safe_load(DEMO_TEXT)


def bomb(levels: int = 8, width: int = 10) -> str:
    """The "billion laughs" of issue 26: ``levels`` nested lists, each ``width`` aliases of the last."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _demo(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(DEMO)
    data.update(changes)
    return data


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------------------------------
# the loader
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [8, 12])
def test_an_alias_bomb_is_refused_before_any_object_is_built(monkeypatch, levels):
    def construct(*args, **kwargs):
        raise AssertionError("the document was built")

    monkeypatch.setattr(yaml_io._LOADER, "construct_document", construct)
    assert len(bomb(levels).encode()) < 1000
    with pytest.raises(
        ConfigError, match=rf"more than {MAX_NODES} values once its aliases are expanded"
    ) as err:
        loads_yaml(bomb(levels))
    _one_line(err)


def test_anchors_merge_keys_and_small_aliases_still_load():
    text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 5\nlist: &l [1, 2]\ntwice: [*l, *l]\n"
    assert loads_yaml(text) == {
        "base": {"x": 1, "y": 2},
        "other": {"x": 5, "y": 2},
        "list": [1, 2],
        "twice": [[1, 2], [1, 2]],
    }
    assert loads_yaml(bomb(levels=2)) is not None  # 1 + 10 + 100 values per level: within the bound
    assert loads_yaml("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [1, *a]\n", "line 1: an alias refers to a node that contains it"),
        ("a: 1\nb: 2\na: 3\n", "line 3: the key 'a' appears twice in one mapping \\(first on line 1\\)"),
        ("m:\n  true: 1\n  True: 2\n", "line 3: the key 'True' appears twice"),
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", f"nested deeper than {MAX_DEPTH}"),
        ("a: " + "9" * 30 + "\n", "line 1: an integer of 30 characters is out of range"),
        ("a: [\n", "not valid YAML: line 2, column 1: did not find expected node content"),
        ("a:\n\tb: 1\n", "not valid YAML: line 2, column 1: found character that cannot start any token"),
        ("a: 1\n---\nb: 2\n", "not valid YAML: line 2, column 1: but found another document"),
        ("a: \x00\n", "not valid YAML: unacceptable character #x0000"),
        ("a: !!python/object/apply:os.system [echo]\n", "could not determine a constructor"),
        ("m: {x: [1, .nan]}\n", "m.x.1: .nan is not allowed; give a finite number"),
        ("m: {x: -.inf}\n", r"m.x: -.inf is not allowed"),
        ("m: {x: .Inf}\n", r"m.x: .inf is not allowed"),
        ("x: 1.0e+400\n", r"x: .inf is not allowed"),
        ("x: 2024-01-01\n", "x: YAML reads a date here; .*quote it"),
        ("x: !!set {a, b}\n", "x: YAML reads a set here"),
        ("x: !!binary aGVsbG8=\n", "x: YAML reads binary data here"),
        ("m: {1: a}\n", "m: the key 1 is an integer, not a string"),
    ],
)
def test_bad_yaml_is_one_line_naming_where(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        loads_yaml(text)
    _one_line(err)


def test_a_refused_file_is_named_by_place_never_by_content(tmp_path):
    secret = "s3cr3t-line-of-the-file"
    for text in (f"a: [{secret}\n", f"a: 1\na: {secret}\n", f"x: {{y: .nan, z: {secret}}}\n"):
        path = tmp_path / "f.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            read_yaml_file(path)
        assert secret not in _one_line(err)


def test_files_too_large_not_utf8_or_not_regular_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(DEMO_TEXT + "# padding\n" * (MAX_BYTES // 10))
    with pytest.raises(ConfigError, match=rf"the file has \d+ bytes; at most {MAX_BYTES} \(64 KiB\)"):
        read_yaml_file(big)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(DEMO_TEXT.replace("scaled-down", "caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        read_yaml_file(latin1)
    with pytest.raises(ConfigError, match="cannot read: not a regular file"):
        read_yaml_file(tmp_path)
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        read_yaml_file(tmp_path / "missing.yaml")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + DEMO_TEXT.encode())
    assert read_yaml_file(bom) == DEMO


def test_every_shipped_file_loads_as_before():
    for path in sorted(EXPERIMENTS.glob("**/*.yaml")):
        assert read_yaml_file(path) == yaml.safe_load(path.read_text()), path.name


# ----------------------------------------------------------------------------------------------------
# experiments: --set, seeds, sizes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("x=[", "--set 'x=\\[': not valid YAML: line 2, column 1"),
        ("seeds=[1, .nan]", r"--set 'seeds=\[1, .nan\]': seeds.1: .nan is not allowed"),
        ("model.config.gamma_input=.inf", "model.config.gamma_input: .inf is not allowed"),
        ("x={a: 1, a: 2}", "the key 'a' appears twice"),
        ("seeds", "expected path.to.key=value"),
    ],
)
def test_bad_set_values_are_one_line(item, message):
    with pytest.raises(ConfigError, match=message) as err:
        apply_overrides(DEMO, [item])
    assert len(_one_line(err)) < 200


def test_a_set_alias_bomb_is_refused():
    with pytest.raises(ConfigError, match="alias bomb"):
        apply_overrides(DEMO, ["x={" + bomb().strip().replace("\n", ", ") + "}"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": [7, 7]}, "seeds: .*seed 7 is given more than once"),
        ({"seeds": [-1]}, r"seeds.0: Input should be greater than or equal to 0 \(got -1\)"),
        ({"seeds": [MAX_SEED + 1]}, rf"seeds.0: Input should be less than or equal to {MAX_SEED}"),
        ({"seeds": [12345678901234567890]}, rf"seeds.0: Input should be less than or equal to {MAX_SEED}"),
        ({"seeds": list(range(1001))}, "seeds: List should have at most 1000 items"),
        (
            {"seeds": None, "members": [{"seed": 1}, {"seed": 1}]},
            "members: .*seed 1 and split None is given more than once",
        ),
        ({"seeds": None, "members": [{"seed": -3}]}, "members.0.seed: Input should be greater than"),
        ({"seeds": [1.5]}, "seeds.0: Input should be a valid integer"),
        ({"comment": float("nan")}, "comment: .nan is not allowed"),
    ],
)
def test_bad_seeds_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_experiment(_demo(**changes))
    _one_line(err)


def test_the_largest_seed_and_distinct_members_are_accepted():
    assert parse_experiment(_demo(seeds=[0, MAX_SEED])).seeds == [0, MAX_SEED]
    members = [{"seed": 1, "split": 0}, {"seed": 1, "split": 1}]
    data = _demo(seeds=None, members=members)
    data["dataset"] = dict(data["dataset"], config=dict(data["dataset"]["config"], split={"n_splits": 2}))
    assert [m.split for m in parse_experiment(data).members] == [0, 1]


@pytest.mark.parametrize(
    ("part", "changes", "message"),
    [
        (
            "model",
            {"hidden_channels": 100000},
            "model.config.hidden_channels: Input should be less than or equal to 1024",
        ),
        ("model", {"layers": 1000}, "model.config.layers: Input should be less than or equal to 64"),
        ("model", {"input_kern": 999}, "model.config.input_kern: Input should be less than or equal to 64"),
        ("model", {"core_type": "vit", "vit": {"dim": 100000, "heads": 4}}, "model.config.vit.dim"),
        (
            "model",
            {
                "hidden_channels": 1024,
                "layers": 30,
                "hidden_kern": 31,
                "depth_separable": False,
                "stack": None,
            },
            r"model.config: .*the core would have about 2.9e\+10 weights \(at most 1e\+09\)",
        ),
        (
            "model",
            {"core_type": "vit", "vit": {"dim": 4096, "layers": 64, "heads": 16, "mlp_ratio": 4}},
            "the core would have about",
        ),
        (
            "trainer",
            {"max_iter": 10**6},
            "trainer.config.max_iter: Input should be less than or equal to 10000",
        ),
        ("dataset", {"batch_size": 10**6}, "dataset.config.batch_size: Input should be less than or equal"),
        ("dataset", {"shuffle_seed": -1}, "dataset.config.shuffle_seed: Input should be greater than"),
        (
            "dataset",
            {"split": {"n_splits": 2, "index": 2}},
            r"dataset.config.split: .*split index 2 is out of range: the config makes 2 splits",
        ),
    ],
)
def test_absurd_sizes_are_refused(part, changes, message):
    data = copy.deepcopy(DEMO)
    data[part]["config"].update(changes)
    with pytest.raises(ConfigError, match=message) as err:
        parse_experiment(data)
    assert len(_one_line(err)) < 300


def test_shipped_experiments_are_far_from_the_bounds():
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        spec = load_experiment(path)
        model = resolve("model", spec.model.fn, spec.model.config)
        assert model.core_parameters() < MAX_CORE_PARAMETERS / 1000, path.name
    winner = validate(BaselineModelConfig, {"hidden_channels": 64, "layers": 4, "hidden_kern": 9})
    assert 10**4 < winner.core_parameters() < 10**6
    # large but real: 1024 channels, 19 plain 7x7 layers (~10^9 weights) and a ViT-Large-sized core
    big = {"hidden_channels": 1024, "layers": 19, "depth_separable": False, "stack": None}
    assert validate(BaselineModelConfig, big).core_parameters() < MAX_CORE_PARAMETERS
    vit = {"core_type": "vit", "vit": {"dim": 1024, "layers": 24, "heads": 16, "mlp_ratio": 4}}
    assert validate(BaselineModelConfig, vit).core_parameters() < MAX_CORE_PARAMETERS


# ----------------------------------------------------------------------------------------------------
# the real command line: refused before the database is touched
# ----------------------------------------------------------------------------------------------------


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_argv(*argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        # a database the command would need if it got that far: refusing the file must not reach it
        env={"PATH": "/usr/bin:/bin", "DJ_HOST": "127.0.0.1", "DJ_PORT": "1", "HOME": str(cwd)},
    )


@pytest.mark.parametrize(
    ("argv", "files", "expect"),
    [
        (["experiment", "add", "bomb.yaml"], {"bomb.yaml": bomb()}, "error: bomb.yaml: .*alias bomb"),
        (
            ["sweep", "add", "sweep.yaml"],
            {"bomb.yaml": bomb(), "sweep.yaml": "name: s\nbase: bomb.yaml\nbudget: 1\nspace: {a: [1]}\n"},
            "error: sweep.yaml: base: bomb.yaml: .*alias bomb",
        ),
        (["sweep", "add", "bomb.yaml"], {"bomb.yaml": bomb()}, "error: bomb.yaml: .*alias bomb"),
        (
            ["experiment", "add", "demo.yaml", "--set", "x=["],
            {"demo.yaml": DEMO_TEXT},
            r"error: demo.yaml: --set 'x=\[': not valid YAML",
        ),
        (
            ["experiment", "add", "demo.yaml"],
            {"demo.yaml": DEMO_TEXT.replace("seeds: [42]", "seeds: [7, 7]")},
            "error: demo.yaml: seeds: .*seed 7 is given more than once",
        ),
    ],
)
def test_the_command_line_refuses_with_one_line(tmp_path, argv, files, expect):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    p = _cli(*argv, cwd=tmp_path)
    lines = (p.stdout + p.stderr).splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stdout + p.stderr
    assert re.search(expect, lines[0]), lines[0]
