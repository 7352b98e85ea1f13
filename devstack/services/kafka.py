"""Kafka: one KRaft broker that is its own controller, run from the jars bootstrap resolves."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from devstack import configs, health
from devstack.components import HOST, REPO, Component, StackError, find_program, require_program
from devstack.process import run
from devstack.services.base import Launch, Service, Site

POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"
_JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    # On 2 shared cores the optimising JIT (C2) took a third of the broker's CPU for minutes
    # after each start; C1 alone compiles fast and runs a single test broker well.
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
)


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version the pom resolves."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not found:
        raise StackError(f"{pom} has no <kafka.version> property")
    return found.group(1).strip()


class Kafka(Service):
    """The stack's Kafka broker."""

    kind = "kafka"
    tier = 0
    start_timeout_s = 120
    stop_grace_s = 30

    def __init__(self, site: Site, lib: Path | None = None) -> None:
        super().__init__(site)
        self.lib = lib or REPO / ".devstack" / f"kafka-lib-{kafka_version()}"

    def port(self, index: int) -> int:
        return self.site.ports.kafka

    @property
    def bootstrap(self) -> str:
        """Its bootstrap servers."""
        return f"{HOST}:{self.site.ports.kafka}"

    def hint(self) -> str:
        return f"if the broker's storage is damaged, remove {self.site.state_dir / 'kafka'}"

    def missing(self) -> list[str]:
        lacks = [] if find_program("java") else ["java"]
        if not self._has_jars():
            lacks.append(f"Kafka jars in {self.lib}")
        return lacks

    def prepare(self, component: Component) -> Launch:
        java = require_program("java")
        if not self._has_jars():
            raise StackError(
                f"Kafka jars missing in {self.lib}: "
                f"run scripts/bootstrap.sh (resolves them with mvn)"
            )
        home = self.site.state_dir / "kafka"
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        properties, log4j = home / "server.properties", home / "log4j2.properties"
        properties.write_text(
            configs.kafka_server(
                port=component.port, controller_port=self.site.ports.kafka_controller, data=data
            )
        )
        log4j.write_text(configs.kafka_log4j2())
        jvm = [
            java,
            *_JVM_FLAGS,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.lib}/*",
        ]
        if not (data / "meta.properties").exists():
            if data.exists():
                shutil.rmtree(data)  # left by an interrupted format
            self.site.say("kafka: formatting the broker's storage")
            argv = [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                _cluster_id(home),
                "--config",
                str(properties),
            ]
            code = run(argv, log=self.site.log_path(component.name), timeout=120)
            if code != 0:
                raise self.failure(component, f"storage format failed with code {code}")
        # A class-data archive halves the broker's start (about 5 s to 2.5 s on 2 cores). The first
        # broker dumps one when it stops; later ones, of any state dir, map it.
        archive = self._class_archive(java)
        if archive.exists():
            cds = f"-XX:SharedArchiveFile={archive}"
        else:
            (home / "classes.jsa").unlink(missing_ok=True)
            cds = f"-XX:ArchiveClassesAtExit={home / 'classes.jsa'}"
        return Launch([*jvm, cds, "kafka.Kafka", str(properties)])

    def probe(self, component: Component) -> Callable[[], bool]:
        return health.KafkaProbe(self.bootstrap)

    def after_stop(self, component: Component, clean: bool) -> None:
        """After a clean broker stop, share the archive it dumped (the first one wins)."""
        dumped = self.site.state_dir / "kafka" / "classes.jsa"
        java = find_program("java")
        if not clean or java is None or not dumped.exists() or dumped.stat().st_size == 0:
            return
        archive = self._class_archive(java)
        if not archive.exists():
            staging = archive.with_name(f".{archive.name}.{os.getpid()}")
            shutil.copyfile(dumped, staging)
            staging.replace(archive)
        dumped.unlink()

    def _has_jars(self) -> bool:
        return any(self.lib.glob("kafka_2.13-*.jar"))

    def _class_archive(self, java: str) -> Path:
        """The broker's class-data archive for this Java and these jars, beside the jars."""
        binary = Path(java).resolve()
        # A class-data archive only maps into a JVM of the same flags (GC, JIT).
        flags = " ".join(_JVM_FLAGS)
        key = hashlib.sha256(f"{binary}:{binary.stat().st_mtime_ns}:{flags}".encode())
        for jar in sorted(self.lib.glob("*.jar")):
            key.update(f"{jar.name}:{jar.stat().st_size}".encode())
        return self.lib.with_name(f"{self.lib.name}-{key.hexdigest()[:12]}.jsa")


def _cluster_id(home: Path) -> str:
    path = home / "cluster-id"
    if not path.exists():
        while True:
            # Kafka's format (base64 of a UUID); a leading dash would read as an option.
            value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            if not value.startswith("-"):
                break
        path.write_text(value)
    return path.read_text().strip()
