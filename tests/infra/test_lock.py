"""The lock files agree with requirements*.txt and with each other; archives install from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.aws.package import (
    LOCK,
    archives,
    closure,
    lambda_environment,
    read_lock,
    requirements,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
DEV_LOCK = REPO / "requirements-dev.lock"


def _direct(path: Path) -> list[Requirement]:
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += _direct(path.parent / line.split(None, 1)[1])
        elif line:
            found.append(Requirement(line))
    return found


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.txt", LOCK), ("requirements-dev.txt", DEV_LOCK)]
)
def test_every_requirement_is_locked_within_its_range(source: str, lock: Path) -> None:
    pins = read_lock(lock)
    for req in _direct(REPO / source):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {lock.name}: run `make lock`"
        version = pins[name].pin.split("==", 1)[1]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {pins[name].pin}, outside {req}: run `make lock`"
        )
        assert pins[name].hashes


def test_the_dev_lock_pins_runtime_packages_as_the_runtime_lock_does() -> None:
    runtime, dev = read_lock(LOCK), read_lock(DEV_LOCK)
    for name, entry in runtime.items():
        assert dev[name].pin == entry.pin, name


def test_archives_take_locked_pins_and_their_dependencies() -> None:
    lock = read_lock()
    for archive in archives():
        found = closure(archive.roots)
        for arch in ("arm64", "x86_64"):
            reqs = requirements(found.third_party | set(archive.extra_packages), arch=arch)
            names = {r.name for r in reqs}
            assert all(lock[r.name] == r for r in reqs)
            # Closed: every pin the lock records as needed by one of them is in the set too.
            env = lambda_environment(arch, "3.12")
            for entry in lock.values():
                if entry.via & names and (entry.marker is None or entry.marker.evaluate(env)):
                    assert entry.name in names, (archive.name, arch, entry.name)
            assert "boto3" not in names, "the Lambda runtime provides the AWS SDK"


def test_psycopg_brings_its_binary_only_where_it_applies(tmp_path: Path) -> None:
    (tmp_path / "requirements.lock").write_text(
        "psycopg==3.3.9 \\\n    --hash=sha256:aa\n    # via -r requirements.txt\n"
        "psycopg-binary==3.3.9 ; implementation_name != 'pypy' \\\n    --hash=sha256:bb\n"
        "    # via psycopg\n"
        "tzdata==2026.6 ; sys_platform == 'win32' \\\n    --hash=sha256:cc\n    # via psycopg\n"
    )
    reqs = requirements({"psycopg"}, lock_file=tmp_path / "requirements.lock")
    assert [r.line() for r in reqs] == [
        "psycopg==3.3.9 --hash=sha256:aa",
        "psycopg-binary==3.3.9 --hash=sha256:bb",
    ]


def test_a_range_in_the_lock_is_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements.lock").write_text("psycopg>=3 \\\n    --hash=sha256:aa\n")
    with pytest.raises(ValueError, match="make lock"):
        read_lock(tmp_path / "requirements.lock")
