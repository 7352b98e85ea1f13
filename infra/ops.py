"""Deploy and tear down a stack with the Pulumi CLI: what `make deploy` and `make destroy` run.

    python -m infra.ops deploy [--stack S] [--image IMAGE]   # archives, then pulumi up
    python -m infra.ops destroy [--stack S]                  # lift protection, pulumi destroy
    python -m infra.ops image [--stack S]                    # the image deployed last

The image is stack config (``chat:image``): a deploy with ``--image`` sets it; one without keeps
what the stack has, or else the image of its last deployment (its ``image`` output).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DB_TYPE = "aws:rds/instance:Instance"
# Where a stack has no deployment yet: previews need some image, none runs.
NO_IMAGE = "chat:not-deployed-yet"


class OpsError(RuntimeError):
    """A step failed; the message says what to do next."""


def _say(line: str) -> None:
    print(f"ops: {line}", flush=True)


def build_archives(arch: str, python: str) -> None:
    """Build every Lambda archive for the stack's architecture and Python."""
    subprocess.run(
        [sys.executable, "-m", "functions.aws.package", "--arch", arch, "--python", python],
        cwd=REPO,
        check=True,
    )


@dataclass(slots=True)
class Pulumi:
    """The Pulumi CLI on one stack."""

    stack: str | None = None
    binary: str = "pulumi"
    package: Callable[[str, str], None] = build_archives
    calls: list[list[str]] = field(default_factory=list)

    def run(self, *args: str, capture: bool = False, check: bool = True) -> str:
        argv = [self.binary, *args, "--non-interactive"]
        if self.stack:
            argv += ["--stack", self.stack]
        self.calls.append(argv)
        if shutil.which(self.binary) is None:
            raise OpsError(
                f"{self.binary} not found: install the Pulumi CLI "
                "(https://www.pulumi.com/docs/install/) and `pulumi login`"
            )
        done = subprocess.run(argv, cwd=REPO, text=True, capture_output=capture, check=False)
        if check and done.returncode != 0:
            detail = f": {done.stderr.strip()}" if capture and done.stderr else ""
            raise OpsError(f"`{' '.join(argv)}` failed (exit {done.returncode}){detail}")
        return done.stdout.strip() if capture and done.returncode == 0 else ""

    def config(self, key: str) -> str | None:
        return self.run("config", "get", key, capture=True, check=False) or None

    def output(self, name: str) -> str | None:
        return self.run("stack", "output", name, capture=True, check=False) or None

    def resources(self) -> list[dict[str, str]]:
        state = json.loads(self.run("stack", "export", capture=True) or "{}")
        found: list[dict[str, str]] = state.get("deployment", {}).get("resources") or []
        return found


def deployed_image(pulumi: Pulumi) -> str:
    """The image the stack's last deployment runs, or a placeholder before the first."""
    return pulumi.output("image") or NO_IMAGE


def deploy(pulumi: Pulumi, image: str | None) -> None:
    """Build the archives for the stack, set or keep its image, and ``pulumi up``."""
    began = time.monotonic()
    if image:
        pulumi.run("config", "set", "chat:image", image)
    elif not pulumi.config("chat:image"):
        kept = pulumi.output("image")
        if not kept:
            raise OpsError(
                "the stack has no image yet: build and push one (docs/deploy.md, step 4), "
                "then `make deploy IMAGE=<registry>/chat:<tag>`"
            )
        _say(f"keeping the deployed image {kept}")
        pulumi.run("config", "set", "chat:image", kept)
    arch = pulumi.config("chat:lambdaArchitecture") or "arm64"
    _say(f"building the Lambda archives for {arch}")
    pulumi.package(arch, "3.12")
    _say("pulumi up (a first deploy takes 30-45 minutes: MSK and RDS are slow to create)")
    pulumi.run("up", "--yes", "--skip-preview")
    entry = pulumi.output("entry_url")
    _say(f"deployed in {time.monotonic() - began:.0f}s; entry point {entry}")
    _say(f"check it: make smoke URL={entry} (with CHAT_JWT_SECRET set to the stack's secret)")


def destroy(pulumi: Pulumi, now: Callable[[], float] = time.time) -> None:
    """Lift the database's deletion protection, name its final snapshot, ``pulumi destroy``.

    Safe to run again: on a stack with nothing left, it only runs ``pulumi destroy``.
    """
    databases = [r for r in pulumi.resources() if r.get("type") == DB_TYPE]
    if databases:
        # A name no earlier teardown used: RDS refuses to overwrite a snapshot.
        snapshot = "chat-final-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(now()))
        _say(f"turning off deletion protection; final snapshot {snapshot}")
        pulumi.run("config", "set", "chat:dbDeletionProtection", "false")
        pulumi.run("config", "set", "chat:dbFinalSnapshot", snapshot)
        arch = pulumi.config("chat:lambdaArchitecture") or "arm64"
        pulumi.package(arch, "3.12")  # the program reads them, even for one target
        targets = [arg for db in databases for arg in ("--target", db["urn"])]
        pulumi.run("up", "--yes", "--skip-preview", *targets)
    else:
        _say("no database in the stack: nothing to unprotect")
    _say("pulumi destroy (20-40 minutes: Lambda releases its network interfaces slowly)")
    pulumi.run("destroy", "--yes", "--skip-preview")
    _say("destroyed; the final database snapshot and the ECR images stay (docs/deploy.md)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: deploy, destroy or print the deployed image."""
    parser = argparse.ArgumentParser(description="Deploy or tear down the chat stack.")
    parser.add_argument("command", choices=["deploy", "destroy", "image"])
    parser.add_argument("--stack", help="stack name (default: the selected one)")
    parser.add_argument("--image", help="deploy: the image to roll out")
    args = parser.parse_args(argv)
    pulumi = Pulumi(stack=args.stack)
    try:
        if args.command == "deploy":
            deploy(pulumi, args.image)
        elif args.command == "destroy":
            destroy(pulumi)
        else:
            print(deployed_image(pulumi))
    except (OpsError, subprocess.CalledProcessError) as exc:
        print(f"ops: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
