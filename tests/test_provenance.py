import subprocess

from simlab.runs.provenance import git_state


def test_git_state_reports_commit_and_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    state = git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path)["dirty"] is True


def test_git_state_outside_a_repository_is_none(tmp_path):
    assert git_state(tmp_path / "nowhere") is None


def test_cpu_model_reads_cpuinfo_else_platform(monkeypatch, tmp_path):
    import builtins
    import platform

    from simlab.runs import provenance

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nModel name\t: Example CPU 9000 @ 3GHz\nflags\t: avx2\n")
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            return real_open(cpuinfo, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert provenance.cpu_model() == "Example CPU 9000 @ 3GHz"
    cpuinfo.unlink()  # no /proc (macOS, Windows): what platform says, never an empty name
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert provenance.cpu_model() == "arm64"
    monkeypatch.setattr(platform, "machine", lambda: "")
    assert provenance.cpu_model() == "unknown CPU"


def test_the_repository_root_is_read_from_one_place():
    """git_state of the checkout that runs: simlab.paths.REPO_ROOT holds run.py and the package."""
    from simlab.paths import REPO_ROOT

    assert (REPO_ROOT / "run.py").is_file() and (REPO_ROOT / "simlab" / "paths.py").is_file()
