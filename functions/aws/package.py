"""Build each function's Lambda archive with only the modules and packages it imports.

    python -m functions.aws.package              # every registry function, into build/
    python -m functions.aws.package --only persist --arch x86_64

Our modules are followed from the handler and the Lambda entry point through their
module-level imports; third-party imports become requirements, pinned and hash-checked as
requirements.lock has them (with their locked dependencies), installed as manylinux wheels for
Lambda's Python into each archive. ``build/manifest.json`` records each archive's architecture,
Python and digest; the Pulumi program refuses archives that do not match the stack.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.registry import FUNCTIONS, Function
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("chat", "functions")
ENTRY = "functions.aws.lambda_handler"
PROVISION = "provision"
PROVISION_ENTRY = "functions.aws.provision"
GAUGES = "gauges"
GAUGES_ENTRY = "functions.aws.gauges"
# The Lambda Python runtime ships the AWS SDK; bundling it would triple every archive.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath"})
PYTHON_VERSION = "3.12"
# Lambda's Python 3.12 runs on Amazon Linux 2023 (glibc 2.34): any of these wheels loads there.
_MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}
_PLATFORMS = {
    arch: tuple(f"manylinux{tag}_{machine}" for tag in ("_2_34", "_2_28", "2014"))
    for arch, machine in _MACHINES.items()
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Archive:
    """One deployable archive: its name and the modules its code is followed from."""

    name: str
    roots: tuple[str, ...]
    # Imported lazily by the entry point, so the import walk cannot see them.
    extra_packages: tuple[str, ...] = ()
    data_packages: tuple[str, ...] = ()


def trigger_packages(fn: Function) -> tuple[str, ...]:
    """Third-party packages the Lambda adapter needs for this function's trigger."""
    trigger = fn.trigger
    match trigger:
        case HttpRoute():
            return ("mangum",)
        case RedisStream() | KafkaTopic() | Schedule():
            return ()
        case _:
            assert_never(trigger)


def archives(functions: Iterable[Function] = FUNCTIONS) -> list[Archive]:
    """One archive per registry function, plus provisioning's and the gauges'."""
    found = [
        Archive(
            name=fn.name,
            roots=(fn.handler.partition(":")[0], ENTRY),
            extra_packages=trigger_packages(fn),
        )
        for fn in functions
    ]
    found.append(
        Archive(
            name=PROVISION, roots=(PROVISION_ENTRY,), data_packages=("functions.store.migrations",)
        )
    )
    found.append(Archive(name=GAUGES, roots=(GAUGES_ENTRY,)))
    return found


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Names imported at module level (not inside functions, not for type checking only)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)
    return names


@dataclass(slots=True)
class Closure:
    """What an archive's roots import: our source files and third-party top-level names."""

    files: dict[str, Path]
    third_party: set[str]


def closure(roots: Sequence[str]) -> Closure:
    """Follow module-level imports from ``roots`` through our packages."""
    result = Closure(files={}, third_party=set())
    stdlib = sys.stdlib_module_names
    pending = list(roots)
    while pending:
        name = pending.pop()
        top = name.partition(".")[0]
        if top not in FIRST_PARTY:
            if top not in stdlib and top != "__future__":
                result.third_party.add(top)
            continue
        if name in result.files:
            continue
        path = _module_file(name)
        if path is None:
            if name in roots:
                raise LookupError(f"module {name} not found (named by an archive's roots)")
            # ``from package import name`` where name is an attribute, not a module.
            continue
        result.files[name] = path
        parent = name.rpartition(".")[0]
        if parent:
            pending.append(parent)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        pending.extend(_imports(tree, name, path.name == "__init__.py"))
    return result


LOCK = REPO / "requirements.lock"


@dataclass(frozen=True, slots=True)
class Locked:
    """One pin of the lock file: ``name==version``, its marker, its hashes, who needs it."""

    name: str
    pin: str
    marker: Marker | None
    hashes: tuple[str, ...]
    # Canonical names of the locked packages that depend on it; "-r ..." for a direct one.
    via: frozenset[str]

    def line(self) -> str:
        """The pin as a hash-checked requirement line."""
        return " ".join([self.pin, *(f"--hash={h}" for h in self.hashes)])


def read_lock(path: Path = LOCK) -> dict[str, Locked]:
    """The pins of a lock file written by ``make lock`` (uv pip compile --generate-hashes)."""
    entries: dict[str, Locked] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.startswith((" ", "#")):
            continue
        spec = line.rstrip(" \\")
        hashes: list[str] = []
        via: set[str] = set()
        while i < len(lines) and lines[i].startswith(" "):
            part = lines[i].strip().rstrip(" \\")
            i += 1
            if part.startswith("--hash="):
                hashes.append(part.removeprefix("--hash="))
            elif part.startswith("#"):
                name = part.lstrip("#").strip().removeprefix("via").strip()
                if name:
                    via.add(name if name.startswith("-") else canonicalize_name(name))
        req = Requirement(spec)
        if len(req.specifier) != 1 or next(iter(req.specifier)).operator != "==":
            raise ValueError(f"{path.name}: {spec!r} is not an exact pin; run `make lock`")
        if not hashes:
            raise ValueError(f"{path.name}: {req.name} has no hash; run `make lock`")
        name = canonicalize_name(req.name)
        entries[name] = Locked(
            name=name,
            pin=f"{req.name}{req.specifier}",
            marker=req.marker,
            hashes=tuple(hashes),
            via=frozenset(via),
        )
    return entries


def lambda_environment(arch: str, python: str) -> dict[str, str]:
    """The values environment markers take on Lambda's Python for ``arch``."""
    machine = _MACHINES[arch]
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
    }


def requirements(
    packages: Iterable[str],
    *,
    arch: str = "arm64",
    python: str = PYTHON_VERSION,
    lock_file: Path = LOCK,
) -> list[Locked]:
    """The locked pins top-level import names need on Lambda, their dependencies included."""
    lock = read_lock(lock_file)
    environment = lambda_environment(arch, python)

    def applies(entry: Locked) -> bool:
        return entry.marker is None or entry.marker.evaluate(environment)

    by_module = importlib.metadata.packages_distributions()
    wanted: set[str] = set()
    for package in packages:
        dists = by_module.get(package)
        if not dists:
            raise LookupError(f"no installed distribution provides {package!r}")
        for dist in dists:
            name = canonicalize_name(dist)
            if name in RUNTIME_PROVIDED:
                continue
            if name not in lock:
                raise LookupError(
                    f"{dist} (imported as {package!r}) is not in {lock_file.name}: "
                    "add it to requirements.txt and run `make lock`"
                )
            wanted.add(name)
    # Everything the wanted packages depend on, as the lock's "via" lines record it.
    grown = True
    while grown:
        grown = False
        for entry in lock.values():
            if entry.name not in wanted and entry.via & wanted and applies(entry):
                wanted.add(entry.name)
                grown = True
    return sorted((lock[n] for n in wanted if applies(lock[n])), key=lambda e: e.name)


def _install(reqs: Sequence[Locked], target: Path, arch: str, python: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    pins = target.parent / f"{target.name}.requirements.txt"
    pins.write_text("".join(f"{r.line()}\n" for r in reqs), encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            # The set is closed already: exactly the locked versions, checked by hash.
            "--no-deps",
            "--require-hashes",
            "--target",
            str(target),
            *(arg for platform in _PLATFORMS[arch] for arg in ("--platform", platform)),
            "--implementation",
            "cp",
            "--python-version",
            python,
            "--only-binary=:all:",
            "-r",
            str(pins),
        ],
        check=True,
    )
    pins.unlink()


def _write_zip(zip_path: Path, entries: dict[str, Path]) -> str:
    """A reproducible zip (sorted, fixed dates and modes); return its sha256."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[arcname].read_bytes())
    return hashlib.sha256(zip_path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def build(
    archive: Archive,
    out: Path,
    *,
    arch: str = "arm64",
    python: str = PYTHON_VERSION,
    with_dependencies: bool = True,
) -> dict[str, object]:
    """Write ``out/<name>.zip``; return its manifest entry."""
    found = closure(archive.roots)
    for package in archive.data_packages:
        found.files.update(closure([package]).files)
    entries: dict[str, Path] = {}
    for path in found.files.values():
        rel = path.relative_to(REPO)
        entries[rel.as_posix()] = path
        if path.name == "__init__.py":
            # Package data (migrations, templates) that code reads with importlib.resources.
            for data in path.parent.iterdir():
                if data.is_file() and data.suffix not in {".py", ".pyc"}:
                    entries[data.relative_to(REPO).as_posix()] = data
    reqs = requirements(found.third_party | set(archive.extra_packages), arch=arch, python=python)
    if with_dependencies and reqs:
        key = hashlib.sha256(
            "\n".join([arch, python, *(r.line() for r in reqs)]).encode()
        ).hexdigest()[:16]
        site = out / ".deps" / key
        if not site.exists():
            staging = site.with_suffix(".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            _install(reqs, staging, arch, python)
            staging.rename(site)
        entries = {**_tree(site), **entries}
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"{archive.name}.zip"
    digest = _write_zip(zip_path, entries)
    return {
        "zip": zip_path.name,
        "sha256": digest,
        "modules": sorted(found.files),
        "requirements": [r.pin for r in reqs],
        "arch": arch,
        "python": python,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: build the archives and ``build/manifest.json``."""
    parser = argparse.ArgumentParser(description="Build each function's Lambda archive.")
    parser.add_argument("--only", nargs="*", help="archive names (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "build")
    parser.add_argument("--arch", choices=sorted(_PLATFORMS), default="arm64")
    parser.add_argument("--python", default=PYTHON_VERSION, help="Lambda's Python version")
    parser.add_argument(
        "--no-dependencies",
        action="store_true",
        help="leave third-party packages out (to inspect what an archive holds)",
    )
    args = parser.parse_args(argv)
    every = {a.name: a for a in archives()}
    unknown = sorted(set(args.only or ()) - set(every))
    if unknown:
        parser.error(f"unknown archive(s) {', '.join(unknown)}; known: {', '.join(sorted(every))}")
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.only or sorted(every):
        entry = build(
            every[name],
            args.out,
            arch=args.arch,
            python=args.python,
            with_dependencies=not args.no_dependencies,
        )
        manifest[name] = entry
        size = (args.out / str(entry["zip"])).stat().st_size
        print(f"{name}: {args.out / str(entry['zip'])} ({size / 1e6:.1f} MB)")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
