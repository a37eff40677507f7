"""First-contact mistakes refused before any database work: malformed DJ_PORT, a SENSORIUM_HOME that is a
file, an output path that cannot be written, a state_dict with non-finite weights; and a renamed copy of a
recording keeps its own data key through the cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cli.results import out_file_problem
from pipeline.data.cache import load_recording
from pipeline.data.synth import SynthConfig, folder_name, write_synthetic
from pipeline.models.import_state import StateDictImportError, read_state_dict
from pipeline.settings import SettingsError, load_settings
from tests.factories import cli_argv

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize("port", ["abc", "", "0", "70000", "54.3"])
def test_malformed_dj_port_is_refused_with_or_without_dj_host(tmp_path, port):
    for env in ({"DJ_PORT": port}, {"DJ_PORT": port, "DJ_HOST": "db.lab"}):
        with pytest.raises(SettingsError, match=f"DJ_PORT={port!r}: expected a port number"):
            load_settings({"SENSORIUM_HOME": str(tmp_path), **env})
    assert load_settings({"SENSORIUM_HOME": str(tmp_path), "DJ_HOST": "h"}).database.port == 5432


def test_home_that_is_a_file_or_under_one_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SettingsError, match=r"SENSORIUM_HOME=.*afile: is a file"):
        load_settings({"SENSORIUM_HOME": str(afile)})
    with pytest.raises(SettingsError, match=r"lies under the file .*afile"):
        load_settings({"SENSORIUM_HOME": str(afile / "deeper" / "home")})
    assert load_settings({"SENSORIUM_HOME": str(tmp_path / "not" / "yet")}).home == tmp_path / "not" / "yet"


def test_cli_names_the_variable_in_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for env, expect in (({"DJ_PORT": "abc"}, "DJ_PORT='abc'"), ({"SENSORIUM_HOME": str(afile)}, "is a file")):
        p = subprocess.run(
            cli_argv("db", "status"),
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", "SENSORIUM_HOME": str(tmp_path / "home"), **env},
            capture_output=True,
            text=True,
        )
        assert p.returncode == 2 and p.stdout.startswith("error: ") and expect in p.stdout, (
            p.stdout + p.stderr
        )
        assert p.stdout.count("\n") == 1 and not p.stderr, p.stdout + p.stderr


def test_out_file_problems(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "afile is a file, not a folder" in out_file_problem(afile / "out.npz")
    assert "afile is a file, not a folder" in out_file_problem(afile / "a" / "b" / "out.npz")
    assert "is a folder" in out_file_problem(tmp_path)
    assert out_file_problem(tmp_path / "new" / "folders" / "out.npz") is None
    assert out_file_problem(afile) is None  # an existing file is replaced


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_state_dict_is_refused_naming_the_first_bad_parameter(tmp_path, bad):
    state = {"ok.weight": torch.ones(3), "steps": torch.tensor(7), "bad.weight": torch.full((2, 2), bad)}
    state["later.bias"] = torch.full((4,), bad)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(StateDictImportError, match=r"parameter bad\.weight has 4 NaN or infinite value"):
        read_state_dict(tmp_path / "bad.pth")
    torch.save({"w": torch.ones(2), "steps": torch.tensor(3)}, tmp_path / "ok.pth")
    assert set(read_state_dict(tmp_path / "ok.pth")[0]) == {"w", "steps"}


def test_cli_refuses_an_all_nan_checkpoint_in_one_line(tmp_path):
    torch.save({"core.weight": torch.full((4, 4), float("nan"))}, tmp_path / "nan.pth")
    p = subprocess.run(
        cli_argv("import-checkpoint", str(tmp_path / "nan.pth")) + ["--experiment", "any", "--scan", "1-2-3"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "Traceback" not in p.stdout + p.stderr
    assert p.stdout.startswith("error: ") and p.stdout.count("\n") == 1
    assert "parameter core.weight has 16 NaN or infinite value(s) of 16" in p.stdout


def test_renamed_copy_keeps_its_own_key_through_the_cache(tmp_path):
    (original,) = write_synthetic(
        tmp_path / "synth", 1, SynthConfig(n_neurons=8, n_trials=60, seed=5), make_zip=False
    )
    renamed = tmp_path / "copies" / folder_name("11111-1-1")
    shutil.copytree(original, renamed)
    cache = tmp_path / "cache"
    for _ in range(2):  # read, then from the index
        for path, key in ((renamed, "11111-1-1"), (original, original.name[6:].split("-GrayImageNet")[0])):
            rec = load_recording(path, cache, progress=False)
            assert (rec.data_key, rec.extra["folder_name"]) == (key, path.name)
    assert len(list((cache / "recordings").iterdir())) == 1  # one content, cached once
