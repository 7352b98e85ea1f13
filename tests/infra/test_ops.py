"""`make deploy` / `make destroy` drive the Pulumi CLI: here a stand-in CLI that keeps a state."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.ops import NO_IMAGE, OpsError, Pulumi, deploy, deployed_image, destroy

pytestmark = pytest.mark.timeout(60)

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chat:abc123"
DB_URN = "urn:pulumi:prod::chat::chat:infra:Database$aws:rds/instance:Instance::chat-prod-db"

# The Pulumi CLI cannot be installed here: this stand-in keeps config, outputs and resources
# in a JSON file and answers the few commands the ops module runs, as the CLI does.
CLI = """
import json, sys
path = sys.argv[0] + ".json"
state = json.load(open(path))
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
if "--stack" in args:
    i = args.index("--stack"); state["stack"] = args[i + 1]; del args[i:i + 2]
state["log"].append(args)
verb = args[:2]
code = 0
if verb == ["config", "get"]:
    value = state["config"].get(args[2])
    code = 0 if value is not None else 1
    print(value or "")
elif verb == ["config", "set"]:
    state["config"][args[2]] = args[3]
elif verb == ["stack", "output"]:
    value = state["outputs"].get(args[2])
    code = 0 if value is not None else 1
    print(value or "")
elif verb == ["stack", "export"]:
    print(json.dumps({"deployment": {"resources": state["resources"]}}))
elif args[0] == "up":
    state["outputs"] = {"image": state["config"]["chat:image"], "entry_url": "http://alb"}
    if "--target" not in args:
        state["resources"] = [{"type": "aws:rds/instance:Instance", "urn": URN}]
elif args[0] == "destroy":
    if state["resources"] and state["config"].get("chat:dbDeletionProtection") != "false":
        print("error: deletion protection is enabled", file=sys.stderr); code = 255
    else:
        state["resources"] = []; state["outputs"] = {}
json.dump(state, open(path, "w"))
sys.exit(code)
""".replace("URN", repr(DB_URN))


class Cli:
    """The stand-in CLI and its state."""

    def __init__(self, tmp_path: Path, **state: Any) -> None:
        self.path = tmp_path / "pulumi"
        self.path.write_text(f"#!{sys.executable}\n{CLI}")
        self.path.chmod(0o755)
        initial = {"config": {}, "outputs": {}, "resources": [], "log": [], **state}
        self.state_path = Path(f"{self.path}.json")
        self.state_path.write_text(json.dumps(initial))
        self.packaged: list[tuple[str, str]] = []

    def pulumi(self, stack: str | None = "prod") -> Pulumi:
        return Pulumi(
            stack=stack, binary=str(self.path), package=lambda *a: self.packaged.append(a)
        )

    @property
    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_path.read_text())
        return loaded

    def commands(self) -> list[list[str]]:
        return [c for c in self.state["log"] if c[0] in {"up", "destroy"}]


def test_a_first_deploy_sets_the_image_builds_the_archives_and_runs_up(tmp_path: Path) -> None:
    cli = Cli(tmp_path, config={"chat:lambdaArchitecture": "x86_64"})
    deploy(cli.pulumi(), IMAGE)
    assert cli.state["config"]["chat:image"] == IMAGE
    assert cli.packaged == [("x86_64", "3.12")]
    assert cli.commands() == [["up", "--yes", "--skip-preview"]]
    assert cli.state["stack"] == "prod"


def test_a_deploy_without_an_image_keeps_the_deployed_one(tmp_path: Path) -> None:
    cli = Cli(tmp_path, outputs={"image": IMAGE})
    assert deployed_image(cli.pulumi()) == IMAGE
    deploy(cli.pulumi(), None)
    assert cli.state["config"]["chat:image"] == IMAGE
    assert cli.packaged == [("arm64", "3.12")]


def test_a_deploy_with_no_image_anywhere_says_how_to_make_one(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert deployed_image(cli.pulumi()) == NO_IMAGE
    with pytest.raises(OpsError, match="make deploy IMAGE="):
        deploy(cli.pulumi(), None)
    assert cli.commands() == []


def test_destroy_lifts_protection_once_and_works_twice(tmp_path: Path) -> None:
    cli = Cli(tmp_path, config={"chat:image": IMAGE, "chat:dbDeletionProtection": "true"})
    deploy(cli.pulumi(), None)
    # Protected as deployed: a bare pulumi destroy is refused.
    with pytest.raises(OpsError, match="exit 255"):
        cli.pulumi().run("destroy", "--yes")
    destroy(cli.pulumi(), now=lambda: 1_800_000_000.0)
    config = cli.state["config"]
    assert config["chat:dbDeletionProtection"] == "false"
    assert config["chat:dbFinalSnapshot"] == "chat-final-20270115-080000"
    assert cli.state["resources"] == []
    assert cli.commands()[-2:] == [
        ["up", "--yes", "--skip-preview", "--target", DB_URN],
        ["destroy", "--yes", "--skip-preview"],
    ]
    # Again, on the empty stack: no targeted update (it would create the database), no error.
    before = len(cli.commands())
    destroy(cli.pulumi())
    assert cli.commands()[before:] == [["destroy", "--yes", "--skip-preview"]]


def test_a_missing_cli_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(OpsError, match="install the Pulumi CLI"):
        Pulumi(binary=str(tmp_path / "absent")).run("version")
