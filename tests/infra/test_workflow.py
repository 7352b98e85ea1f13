"""The GitHub workflow: actionlint and zizmor find nothing, actions are pinned, jobs have rights."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
BIN = REPO / ".venv" / "bin"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} missing: run scripts/bootstrap.sh (it installs {name})")
    return str(path)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=REPO, check=False)


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def _steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec["steps"]]


def test_actionlint_finds_nothing() -> None:
    done = _run([_tool("actionlint"), "-no-color", str(WORKFLOW)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_zizmor_finds_nothing() -> None:
    done = _run(
        [_tool("zizmor"), "--offline", "--persona=auditor", "--no-progress", str(WORKFLOW.parent)]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings" in done.stdout + done.stderr


def test_zizmor_would_catch_an_unpinned_action(tmp_path: Path) -> None:
    # The audit is live: the same workflow with one action on a tag fails it.
    text = WORKFLOW.read_text()
    unpinned = re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v7", text, count=1)
    assert unpinned != text
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "ci.yml").write_text(unpinned)
    done = _run([_tool("zizmor"), "--offline", "--persona=auditor", "--no-progress", str(bad)])
    assert done.returncode != 0
    assert "unpinned-uses" in done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit(workflow: dict[str, Any]) -> None:
    uses = [step["uses"] for _, step in _steps(workflow) if "uses" in step]
    assert uses
    for ref in uses:
        assert PINNED.match(ref), f"{ref} is not pinned to a commit"
    names = {ref.partition("@")[0] for ref in uses}
    assert "pulumi/actions" in names
    assert not any("pulumi-cli-setup" in n for n in names)


def test_each_job_has_the_rights_it_needs_and_no_more(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    for name in ("lint", "test"):
        assert jobs[name]["permissions"] == {"contents": "read"}
    assert jobs["preview"]["permissions"] == {
        "contents": "read",
        "id-token": "write",
        "pull-requests": "write",
    }
    assert jobs["deploy"]["permissions"] == {"contents": "read", "id-token": "write"}
    for job, step in _steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job


def test_stack_config_comes_from_the_build_and_the_environment(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    for name, command in (("preview", "preview"), ("deploy", "up")):
        (step,) = [
            s
            for s in jobs[name]["steps"]
            if s.get("uses", "").startswith("pulumi/actions@") and "with" in s
        ]
        assert step["with"]["command"] == command
        config = yaml.safe_load(step["with"]["config-map"])
        assert set(config) == {"aws:region", "chat:image", "chat:jwtSecret", "chat:redisAuthToken"}
        assert config["chat:jwtSecret"]["secret"] is True
        assert config["chat:redisAuthToken"]["secret"] is True
        assert jobs[name]["environment"] in {"preview", "production"}
    deploy = jobs["deploy"]["steps"]
    (build,) = [s for s in deploy if s.get("uses", "").startswith("docker/build-push-action@")]
    (up,) = [s for s in deploy if s.get("id") == "up"]
    assert yaml.safe_load(up["with"]["config-map"])["chat:image"]["value"] == build["with"]["tags"]
    # Preview keeps the deployed image rather than rolling it back to a placeholder.
    preview = jobs["preview"]["steps"]
    (image,) = [s for s in preview if s.get("id") == "deployed"]
    assert "infra.ops image" in image["run"]
    assert deploy[-1]["run"].startswith("make smoke")
    # The Python packages CI installs are the locked ones.
    installs = [s["run"] for _, s in _steps(workflow) if "pip install" in s.get("run", "")]
    assert installs and all("--require-hashes -r requirements-dev.lock" in r for r in installs)
