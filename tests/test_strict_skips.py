"""The strict-skips hook of conftest.py: with MCT_STRICT_SKIPS=1 an unexpected skip fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from allowed_skips import ALLOWED_SKIPS

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

SAMPLE = '''
import pytest


def test_runs():
    pass


def test_skips_unexpectedly():
    pytest.skip("a reason nobody allowed")


@pytest.fixture
def needs_something():
    pytest.skip("a fixture's own reason")


def test_skips_in_a_fixture(needs_something):
    pass


def test_skips_for_an_allowed_reason():
    pytest.skip({allowed!r})


@pytest.mark.xfail(reason="expected to fail")
def test_expected_failure():
    raise AssertionError
'''


def run_session(tmp_path: Path, strict: str | None,
                allowed_only: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a tiny pytest session in ``tmp_path`` with tests/conftest.py loaded as a plugin."""
    allowed = next(iter(ALLOWED_SKIPS))
    text = SAMPLE.format(allowed=allowed)
    if allowed_only:
        text = text.split("def test_skips_unexpectedly")[0] + (
            f"\n\ndef test_skips_for_an_allowed_reason():\n    pytest.skip({allowed!r})\n")
    (tmp_path / "test_sample.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MCT_STRICT_SKIPS" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    if strict is not None:
        env["MCT_STRICT_SKIPS"] = strict
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(tmp_path), "-c", os.devnull, "test_sample.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_unexpected_skips_fail_a_strict_session(tmp_path: Path) -> None:
    proc = run_session(tmp_path, "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed, 3 skipped, 1 xfailed" in proc.stdout, proc.stdout
    assert "UNEXPECTED SKIP test_sample.py::test_skips_unexpectedly: a reason nobody allowed" in proc.stdout
    assert "UNEXPECTED SKIP test_sample.py::test_skips_in_a_fixture: a fixture's own reason" in proc.stdout
    assert "test_skips_for_an_allowed_reason:" not in proc.stdout.split("unexpected skips")[1]
    assert "test_expected_failure" not in proc.stdout.split("unexpected skips")[1]


def test_without_strict_skips_a_skip_passes(tmp_path: Path) -> None:
    for strict in (None, "0"):
        proc = run_session(tmp_path, strict)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1 passed, 3 skipped, 1 xfailed" in proc.stdout, proc.stdout
        assert "UNEXPECTED SKIP" not in proc.stdout


def test_allowed_skips_pass_a_strict_session(tmp_path: Path) -> None:
    proc = run_session(tmp_path, "1", allowed_only=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout
    assert "UNEXPECTED SKIP" not in proc.stdout


def test_every_allowed_skip_says_why() -> None:
    assert ALLOWED_SKIPS
    for reason, why in ALLOWED_SKIPS.items():
        assert reason.strip() == reason and reason, reason
        assert why.startswith("tests/"), why
