"""Real, isolated Debian nodes on this machine for Ansible: tests, benchmarks and `local`.

A node is a systemd-nspawn container booting a cached Debian base image through an overlay (so
each node starts clean in about a second), inside its own network namespace joined to a bridge
in the host namespace, and reached over SSH like a rented server:

    host: bridge snbr<slot> 10.213.<slot>.1/24
      └─ veth sn<slot>h<i> ── netns sn<slot>-<i>: eth0 10.213.<slot>.<10+i> ── node (sshd, ...)

The image has the packages the roles install already downloaded (the nodes have no network
beyond the bridge) and a bootstrap user `admin` with passwordless sudo, as Debian's cloud images
have: Ansible logs in as that user, so `hardening` can forbid root logins on test nodes too.

Every node mounts the project and the Python running it read-only at the same paths as here
(its state folder `.local/` masked): a Prefect worker on a node (roles/prefect_worker) runs the
control plane's very code and interpreter, which a node without a network could not install. The
control plane's API listens on 127.0.0.1 only; `ensure_relay` gives a launch's nodes a way to it,
an HAProxy TCP relay on the bridge address.

Everything a launch creates is recorded under /run/socialnet-nodes/<slot>/ so that teardown
always finds it, also after a crash: a slot whose owner process is gone is cleaned at the next
launch. Root is needed (mounts, namespaces, nspawn).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from socialnet_ops.adapters.process import pid_alive
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.inventory import (
    PREFECT_WORKER_GROUP,
    InventoryNode,
    build_inventory,
    prefect_worker_group,
)
from socialnet_ops.core.paths import environment_state_dir, repo_root, state_root

SUITE = "bookworm"
CACHE_SETTING = "SOCIALNET_NODE_CACHE"
DEFAULT_CACHE = Path("/var/cache/socialnet-nodes")
RUN_ROOT = Path("/run/socialnet-nodes")
ROLES_DIR = repo_root() / "infrastructure" / "ansible" / "roles"
# Bump when the way the image is made changes, so cached images are rebuilt.
IMAGE_RECIPE = 4
BOOTSTRAP_USER = "admin"
SUBNET_PREFIX = "10.213"
FIRST_HOST = 10
MAX_SLOTS = 250
# Booting takes seconds; on a machine whose two cores the suite saturates, over a minute.
SSH_WAIT_SECONDS = 150.0
# The nodes' apt source: a local repository of exactly the pre-downloaded packages, as an
# air-gapped mirror would be (apt then parses a few hundred packages, not Debian's 60,000).
OFFLINE_REPO = "/var/lib/socialnet-offline"

# What must be installed for a node to boot and be driven by Ansible.
BOOT_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-apt",
    "openssh-server",
    "sudo",
    "iproute2",
    "procps",
)
GROUP_PREFIXES = {"control_plane": "cp", "workers": "worker"}
# The group whose nodes run a Prefect worker of the control plane in `up`'s environments.
PREFECT_WORKER_NODES = "workers"
# System prefixes belong to the node's own Debian: never covered by the host's.
SYSTEM_PREFIXES = (Path("/"), Path("/usr"), Path("/usr/local"))
# The relay to the control plane: connections at once, and how long one may idle (the events
# websocket of a worker stays open; it reconnects after this).
RELAY_MAX_CONNECTIONS = 256
RELAY_IDLE_TIMEOUT = "1h"
RELAY_START_SECONDS = 10.0
NODE_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
REQUIRED_TOOLS = ("mmdebstrap", "systemd-nspawn", "ip", "ssh", "ssh-keygen", "nsenter", "mount")


class NodeError(Exception):
    """Nodes could not be built, started or reached; the message says which and why."""


class NodesUnavailableError(NodeError):
    """This machine cannot run nodes (not root, a tool missing, no overlayfs)."""


def requirements_problem() -> str | None:
    """Why nodes cannot run here, or None; install the tools with install-node-tools.sh."""
    if os.geteuid() != 0:
        return "test nodes need root (mounts, network namespaces, systemd-nspawn)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: run infrastructure/bootstrap/install-node-tools.sh "
            "(apt-get install mmdebstrap systemd-container openssh-client iproute2)"
        )
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    return None


def require_nodes() -> None:
    problem = requirements_problem()
    if problem:
        raise NodesUnavailableError(problem)


def _run(
    argv: Sequence[str], *, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise NodeError(
            f"{' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()}"
        )
    return result


# --- the base image --------------------------------------------------------------------------


def role_packages(roles_dir: Path = ROLES_DIR) -> list[str]:
    """Every package the roles install: their `*_packages` defaults, so the image follows them."""
    packages: set[str] = set()
    for defaults in sorted(roles_dir.glob("*/defaults/main.yml")):
        document = yaml.safe_load(defaults.read_text()) or {}
        for name, value in document.items():
            if name.endswith("_packages") and isinstance(value, list):
                packages.update(str(item) for item in value)
    return sorted(packages)


def debian_mirrors(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian and Debian security mirrors this machine's apt uses (deb822 or one-line)."""
    uris: list[str] = []
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        uris += re.findall(r"(?mi)^URIs:\s*(\S+)", path.read_text())
    for path in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if path.exists():
            uris += re.findall(r"(?m)^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text())
    security = next((uri for uri in uris if uri.rstrip("/").endswith("debian-security")), None)
    main = next(
        (uri for uri in uris if uri.rstrip("/").endswith("/debian") and "security" not in uri),
        None,
    )
    main = main or "http://deb.debian.org/debian"
    return main.rstrip("/"), (security or "http://deb.debian.org/debian-security").rstrip("/")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_SETTING) or DEFAULT_CACHE)


@dataclass(frozen=True)
class ImageRecipe:
    suite: str
    mirror: str
    security_mirror: str
    boot_packages: tuple[str, ...]
    role_packages: tuple[str, ...]

    @classmethod
    def current(cls) -> ImageRecipe:
        mirror, security = debian_mirrors()
        return cls(SUITE, mirror, security, BOOT_PACKAGES, tuple(role_packages()))

    @property
    def key(self) -> str:
        document = json.dumps({"recipe": IMAGE_RECIPE, **self.__dict__}, sort_keys=True)
        return hashlib.sha256(document.encode()).hexdigest()[:16]

    def mmdebstrap_command(self, target: Path) -> list[str]:
        download = " ".join(self.role_packages)
        sudoers = f"{BOOTSTRAP_USER} ALL=(ALL:ALL) NOPASSWD: ALL"
        repo = OFFLINE_REPO
        index = (
            f'cd {repo} && for f in *.deb; do dpkg-deb -f "$f"; '
            'printf "Filename: ./%s\\nSize: %s\\nSHA256: %s\\n\\n" "$f" "$(stat -c %s "$f")" '
            '"$(sha256sum "$f" | cut -d" " -f1)"; done > Packages'
        )
        hooks = [
            # The roles install these offline: the nodes have no network.
            f'chroot "$1" apt-get install -y -qq --download-only --no-install-recommends {download}',
            f'mkdir -p "$1{repo}" && mv "$1"/var/cache/apt/archives/*.deb "$1{repo}/"',
            f"chroot \"$1\" sh -c '{index}'",
            'rm -f "$1"/etc/apt/sources.list.d/* "$1"/var/lib/apt/lists/*_* "$1"/var/cache/apt/*.bin',
            f'echo "deb [trusted=yes] file:{repo} ./" > "$1/etc/apt/sources.list"',
            'chroot "$1" apt-get update -qq',
            # Nodes live in memory for minutes: no fsync, no manuals or translations to unpack.
            'printf "force-unsafe-io\\npath-exclude=/usr/share/doc/*\\npath-exclude=/usr/share/man/*\\npath-exclude=/usr/share/locale/*\\n" > "$1/etc/dpkg/dpkg.cfg.d/socialnet-test-node"',
            # The bootstrap user of Debian's cloud images, which Ansible logs in as.
            f'chroot "$1" useradd --create-home --shell /bin/bash --groups sudo {BOOTSTRAP_USER}',
            f"echo '{sudoers}' > \"$1/etc/sudoers.d/90-bootstrap\"",
            'chmod 0440 "$1/etc/sudoers.d/90-bootstrap"',
            # Timers that would take the dpkg lock while Ansible runs.
            'for unit in apt-daily.timer apt-daily-upgrade.timer; do ln -sf /dev/null "$1/etc/systemd/system/$unit"; done',
            'rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"',
        ]
        command = [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            f"--include={','.join(self.boot_packages)}",
            # The machine's mirror may serve frozen snapshots whose Release files have expired.
            '--aptopt=Acquire::Check-Valid-Until "false"',
            '--aptopt=Acquire::Check-Date "false"',
            '--aptopt=APT::Install-Recommends "false"',
            # Keep the lists and the downloaded packages: the roles install from them offline.
            "--skip=cleanup/apt/lists",
            "--skip=cleanup/apt/cache",
        ]
        command += [f"--customize-hook={hook}" for hook in hooks]
        command += [
            self.suite,
            str(target),
            f"deb {self.mirror} {self.suite} main",
            f"deb {self.mirror} {self.suite}-updates main",
            f"deb {self.security_mirror} {self.suite}-security main",
        ]
        return command


def ensure_image(on_line: Callable[[str], None] | None = None) -> Path:
    """The base root filesystem for the current recipe, built once per machine (~30-60 s)."""
    require_nodes()
    recipe = ImageRecipe.current()
    root = cache_root()
    image = root / recipe.key / "rootfs"
    if (image / ".socialnet-image").exists():
        return image
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same image
        if (image / ".socialnet-image").exists():
            return image
        building = root / f"{recipe.key}.building"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        say = on_line or (lambda line: None)
        say(f"building the node image {recipe.key} ({recipe.mirror}, {recipe.suite})")
        started = time.monotonic()
        process = subprocess.Popen(
            recipe.mmdebstrap_command(building / "rootfs"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            tail = [*tail[-30:], line.rstrip()]
            say(line.rstrip())
        if process.wait() != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise NodeError("mmdebstrap failed to build the node image:\n" + "\n".join(tail))
        (building / "rootfs" / ".socialnet-image").write_text(
            json.dumps({**recipe.__dict__, "built_in_s": round(time.monotonic() - started, 1)})
        )
        target = root / recipe.key
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
        say(f"node image ready in {time.monotonic() - started:.0f} s: {image}")
        # Images of other recipes go, unless nodes of another checkout still run on them.
        mounts = Path("/proc/mounts").read_text()
        for other in root.iterdir():
            if other.is_dir() and other.name != recipe.key and str(other) not in mounts:
                shutil.rmtree(other, ignore_errors=True)
    return image


# --- the network of a launch -------------------------------------------------------------------


def bridge_name(slot: int) -> str:
    return f"snbr{slot}"


def netns_name(slot: int, index: int) -> str:
    return f"sn{slot}-{index}"


def host_veth_name(slot: int, index: int) -> str:
    return f"sn{slot}h{index}"


def host_address(slot: int) -> str:
    return f"{SUBNET_PREFIX}.{slot}.1"


def node_address(slot: int, index: int) -> str:
    return f"{SUBNET_PREFIX}.{slot}.{FIRST_HOST + index}"


def node_names(groups: Mapping[str, int]) -> list[tuple[str, str]]:
    """(name, group) per node: control_plane -> cp-0, workers -> worker-1, worker-2, ..."""
    names: list[tuple[str, str]] = []
    for group, count in groups.items():
        prefix = GROUP_PREFIXES.get(group, group.replace("_", "-"))
        names += [(f"{prefix}-{len(names) + offset}", group) for offset in range(count)]
        # Names are numbered across groups so every node's number is its address's.
    return names


# --- the project on the nodes ------------------------------------------------------------------


def outermost(paths: Sequence[Path]) -> list[Path]:
    """`paths` without those inside another one of them, sorted."""
    unique = sorted(set(paths))
    return [
        path for path in unique if not any(p != path and path.is_relative_to(p) for p in unique)
    ]


def project_mounts(
    root: Path | None = None, prefixes: Sequence[str] = (sys.prefix, sys.base_prefix)
) -> list[Path]:
    """What every node mounts read-only at the same path: the project and the Python running it.

    The virtualenv's interpreter is a link into its base installation, so both prefixes go; the
    node's own /usr is never covered by the host's.
    """
    candidates = [(root or repo_root()).resolve()]
    candidates += [Path(prefix).resolve() for prefix in prefixes]
    return [path for path in outermost(candidates) if path not in SYSTEM_PREFIXES]


def masked_paths(root: Path | None = None) -> list[Path]:
    """The project's state folders (secrets, tokens, databases), hidden under an empty tmpfs."""
    root = (root or repo_root()).resolve()
    found = {root / ".local", state_root().resolve()}
    return sorted(path for path in found if path.is_relative_to(root) and path.is_dir())


# --- processes -----------------------------------------------------------------------------------


def _process_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def _kill_container(pid: int, timeout: float = 10.0) -> None:
    """Kill a node at once: its init dies, so the kernel ends every process of its namespace."""
    if not _is_nspawn(pid):
        return
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _is_nspawn(pid) and pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _is_nspawn(pid) and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _umount(path: Path) -> None:
    if not path.exists() or not os.path.ismount(path):
        return
    if _run(["umount", str(path)], check=False).returncode != 0:
        _run(["umount", "-l", str(path)], check=False)  # lazily, if a process still holds it


def _make_traversable(root: Path, mount: Path) -> None:
    """Let every user of the node reach `mount` (a Python under /root, 0700 in the image)."""
    for ancestor in reversed(mount.parents):
        inside = root / ancestor.relative_to("/")
        if inside.is_dir():
            mode = inside.stat().st_mode
            if not mode & 0o001:
                inside.chmod((mode & 0o7777) | 0o001)


def _links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line]


def _namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# --- a launch ---------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    group: str
    index: int
    slot: int
    state: Path  # /run/socialnet-nodes/<slot>/nodes/<name>
    upper_root: Path  # the slot's tmpfs
    pid: int | None = None

    @property
    def address(self) -> str:
        return node_address(self.slot, self.index)

    @property
    def netns(self) -> str:
        return netns_name(self.slot, self.index)

    @property
    def host_veth(self) -> str:
        return host_veth_name(self.slot, self.index)

    @property
    def merged(self) -> Path:
        return self.state / "root"

    def init_pid(self) -> int | None:
        if self.pid is None or not _is_nspawn(self.pid):
            return None
        children = _children(self.pid)
        return children[0] if children else None

    @property
    def running(self) -> bool:
        return self.init_pid() is not None


@dataclass
class NodeSet:
    """The nodes of one launch: start, reach, stop one, and tear everything down."""

    slot: int
    state: Path
    image: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return bridge_name(self.slot)

    @property
    def key_file(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def public_key(self) -> str:
        return (self.state / "id_ed25519.pub").read_text().strip()

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    # -- setup

    def _prepare_network(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{host_address(self.slot)}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _prepare_node(self, node: Node) -> None:
        node.state.mkdir(parents=True)
        upper = node.upper_root / node.name
        (upper / "upper").mkdir(parents=True)
        (upper / "work").mkdir()
        node.merged.mkdir()
        _run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.image},upperdir={upper / 'upper'},workdir={upper / 'work'}",
                str(node.merged),
            ]
        )
        root = node.merged
        (root / "etc/hostname").write_text(node.name + "\n")
        hosts = f"127.0.0.1 localhost\n{node.address} {node.name}\n"
        (root / "etc/hosts").write_text(hosts)
        ssh_dir = root / "home" / BOOTSTRAP_USER / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.public_key + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)
        owner = (root / "home" / BOOTSTRAP_USER).stat()
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, owner.st_uid, owner.st_gid)
        for mount in project_mounts():
            _make_traversable(root, mount)
        _run(["ip", "netns", "add", node.netns])
        _run(
            [
                "ip",
                "link",
                "add",
                node.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                node.netns,
            ]
        )
        _run(["ip", "link", "set", node.host_veth, "master", self.bridge, "up"])
        _run(["ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0"])
        _run(["ip", "-n", node.netns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", node.netns, "link", "set", "lo", "up"])

    def _boot(self, node: Node) -> None:
        log = open(node.state / "console.log", "w")  # noqa: SIM115 - the node's stdout for its life
        process = subprocess.Popen(
            [
                "systemd-nspawn",
                "-q",
                "-b",
                "-D",
                str(node.merged),
                "-M",
                node.name,
                f"--network-namespace-path=/run/netns/{node.netns}",
                "--register=no",
                "--keep-unit",
                "--console=passive",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                # The node's network namespace is its own: it may set its sysctls and links.
                "--capability=CAP_NET_ADMIN",
                *[f"--bind-ro={path}" for path in project_mounts()],
                *[f"--tmpfs={path}:mode=0700" for path in masked_paths()],
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a node outlives a Ctrl-C in the terminal of its launcher
            # Network sysctls are per namespace: let the node set its own (hardening, k8s_node).
            env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
        )
        log.close()
        node.pid = process.pid
        (node.state / "pid").write_text(str(process.pid))

    def _wait_for_ssh(self, node: Node, timeout: float = SSH_WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if node.pid is not None and not pid_alive(node.pid):
                console = (node.state / "console.log").read_text()[-2000:]
                raise NodeError(f"node {node.name} stopped while booting:\n{console}")
            try:
                with socket.create_connection((node.address, 22), timeout=1) as connection:
                    connection.settimeout(2)
                    if connection.recv(64).startswith(b"SSH-"):
                        break
            except OSError as error:
                last = str(error)
            time.sleep(0.1)
        else:
            raise NodeError(
                f"node {node.name} ({node.address}) gave no SSH banner in {timeout:.0f} s: {last}"
            )
        # A banner is not a login: until boot ends, pam_nologin turns the bootstrap user away.
        while time.monotonic() < deadline:
            try:
                login = subprocess.run(
                    [*self.ssh_command(node.name), "true"],
                    capture_output=True,
                    text=True,
                    timeout=15,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                last = "ssh took over 15 s"
                continue
            if login.returncode == 0:
                return
            last = login.stderr.strip() or f"ssh exited with {login.returncode}"
            time.sleep(0.2)
        console = (node.state / "console.log").read_text(errors="replace")[-1500:]
        raise NodeError(
            f"node {node.name} ({node.address}) takes no SSH login in {timeout:.0f} s: {last}; "
            f"its console ends with:\n{console}"
        )

    def add(self, groups: Mapping[str, int]) -> list[Node]:
        """Create and boot nodes for `groups` (e.g. {"control_plane": 1, "workers": 2})."""
        first = len(self.nodes)
        new: list[Node] = []
        for offset, (name, group) in enumerate(node_names(groups)):
            index = first + offset
            # Names are unique in the set even when `add` is called twice.
            name = name if first == 0 else f"{name.rsplit('-', 1)[0]}-{index}"
            new.append(
                Node(name, group, index, self.slot, self.state / "nodes" / name, self.state / "fs")
            )
        self.nodes += new
        (self.state / "nodes.json").write_text(
            json.dumps([{"name": n.name, "group": n.group, "index": n.index} for n in self.nodes])
        )
        for node in new:
            self._prepare_node(node)
            self._boot(node)
        with ThreadPoolExecutor(max_workers=max(1, len(new))) as pool:
            list(pool.map(self._wait_for_ssh, new))
        for node in new:
            self._record_host_key(node)
        return new

    @property
    def known_hosts(self) -> Path:
        """The nodes' SSH host keys, as their launch read them: Ansible checks every login."""
        return self.state / "known_hosts"

    def _record_host_key(self, node: Node) -> None:
        kind, key = self.exec(node.name, ["cat", NODE_HOST_KEY]).stdout.split()[:2]
        with self.known_hosts.open("a") as known:
            known.write(f"{node.address} {kind} {key}\n")

    # -- use

    def exec(
        self, name: str, argv: Sequence[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a node as root (through its namespaces, not SSH)."""
        init = self.node(name).init_pid()
        if init is None:
            raise NodeError(f"node {name} is not running")
        command = ["nsenter", "-t", str(init), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise NodeError(
                f"{name}: {' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()}"
            )
        return result

    @property
    def launch_token(self) -> str:
        """Different for every launch (its SSH key is new), the same for all its users."""
        return hashlib.sha256(self.public_key.encode()).hexdigest()[:10]

    def ssh_command(self, name: str, user: str = BOOTSTRAP_USER) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.key_file),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            f"{user}@{self.node(name).address}",
        ]

    def stop(self, name: str) -> None:
        """Stop one node as a crash would (its address stays, nothing answers there)."""
        node = self.node(name)
        if node.pid is not None:
            _kill_container(node.pid)

    def inventory(
        self, variables: Mapping[str, Any] | None = None, prefect_workers: Sequence[str] = ()
    ) -> dict[str, Any]:
        """An Ansible inventory of these nodes (see socialnet_ops.core.inventory).

        `prefect_workers`: nodes that run a Prefect worker of the control plane (the
        `prefect_workers` group, reached through this launch's relay)."""

        connection = {
            "ansible_user": BOOTSTRAP_USER,
            "ansible_become": True,
            "ansible_ssh_private_key_file": str(self.key_file),
            # A control socket of this launch only: slot numbers (so addresses) are reused, and
            # a master kept alive (ControlPersist) for the previous set's node would be reused.
            # Host keys as the launch recorded them: a node answering with another is refused.
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={self.known_hosts} "
            f"-o ControlPath={RUN_ROOT}/cp-{self.launch_token}-%C",
            # Nodes have no network: their packages were downloaded into the image.
            "common_apt_update_cache": False,
        }
        for name in prefect_workers:
            self.node(name)  # a KeyError naming the nodes there are
        groups = (
            {PREFECT_WORKER_GROUP: prefect_worker_group(prefect_workers, self.slot)}
            if prefect_workers
            else {}
        )
        return build_inventory(
            [InventoryNode(node.name, node.group, node.address) for node in self.nodes],
            {**connection, **(variables or {})},
            groups,
        )

    def write_inventory(
        self,
        path: Path,
        variables: Mapping[str, Any] | None = None,
        prefect_workers: Sequence[str] = (),
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = self.inventory(variables, prefect_workers)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def close(self) -> None:
        teardown_slot(self.slot)


def _slot_dir(slot: int) -> Path:
    return RUN_ROOT / str(slot)


# --- the relay to the control plane ------------------------------------------------------------


def relay_config(listen: str, port: int) -> str:
    """HAProxy in TCP mode: `listen:port` to 127.0.0.1:port, bounded in connections and idle time."""
    return "\n".join(
        [
            "# The nodes' way to the control plane's API (socialnet_ops.adapters.nodes.ensure_relay).",
            "global",
            f"    maxconn {RELAY_MAX_CONNECTIONS}",
            "    user nobody",
            "    group nogroup",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            f"    timeout client {RELAY_IDLE_TIMEOUT}",
            f"    timeout server {RELAY_IDLE_TIMEOUT}",
            "frontend nodes",
            f"    bind {listen}:{port}",
            "    default_backend api",
            "backend api",
            f"    server api 127.0.0.1:{port}",
            "",
        ]
    )


def _relay_pid(pid_file: Path) -> int | None:
    """The relay's pid when that process is still an HAProxy (pids are reused)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        running = Path(f"/proc/{pid}/comm").read_text().strip() == "haproxy"
    except (OSError, ValueError, IndexError):
        return None
    return pid if running and pid_alive(pid) else None


def _stop_relay(pid_file: Path, timeout: float = 5.0) -> None:
    pid = _relay_pid(pid_file)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _relay_pid(pid_file) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if _relay_pid(pid_file) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def ensure_relay(slot: int, port: int) -> str:
    """`host:port` on slot's bridge, relayed to 127.0.0.1:`port` (where the control plane listens).

    An HAProxy of its own per slot and port, daemonised, its config and pid in the slot's folder
    so that teardown stops it; called again, a running relay of the same config is kept, another
    one replaced.
    """
    state = _slot_dir(slot)
    if not (state / "owner.json").is_file():
        raise NodeError(f"relay to port {port}: no nodes run in slot {slot} ({state})")
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise NodeError(
            "relay to the control plane: haproxy is not installed (apt-get install haproxy)"
        )
    listen = host_address(slot)
    folder = state / "relays"
    folder.mkdir(exist_ok=True)
    config, pid_file = folder / f"{port}.cfg", folder / f"{port}.pid"
    text = relay_config(listen, port)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two configure runs at once start one relay
        if _relay_pid(pid_file) is not None and config.is_file() and config.read_text() == text:
            return f"{listen}:{port}"
        _stop_relay(pid_file)
        config.write_text(text)
        with (folder / f"{port}.log").open("w") as log:
            started = subprocess.run(
                [haproxy, "-D", "-q", "-f", str(config), "-p", str(pid_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=RELAY_START_SECONDS,
                check=False,
            )
        if started.returncode != 0 or _relay_pid(pid_file) is None:
            output = (folder / f"{port}.log").read_text().strip()
            raise NodeError(
                f"relay {listen}:{port} -> 127.0.0.1:{port}: haproxy exited with "
                f"{started.returncode}: {output or 'no output'} ({config})"
            )
    return f"{listen}:{port}"


def teardown_slot(slot: int) -> None:
    """Remove everything of a launch, from what is on disk; safe to run twice or half-done."""
    state = _slot_dir(slot)
    for pid_file in sorted(state.glob("relays/*.pid")):
        _stop_relay(pid_file)
    for pid_file in sorted(state.glob("nodes/*/pid")):
        with contextlib.suppress(ValueError, OSError):
            _kill_container(int(pid_file.read_text()))
    for root in sorted(state.glob("nodes/*/root")):
        _umount(root)
    for namespace in _namespaces():
        if namespace.startswith(f"sn{slot}-"):
            _run(["ip", "netns", "del", namespace], check=False)
    for link in _links():
        if re.fullmatch(rf"sn{slot}h\d+", link) or link == bridge_name(slot):
            _run(["ip", "link", "del", link], check=False)
    _umount(state / "fs")
    shutil.rmtree(state, ignore_errors=True)


def _owner_alive(state: Path) -> bool:
    """A slot belongs to a live process (or was kept on purpose with owner 0)."""
    try:
        owner = json.loads((state / "owner.json").read_text())
    except (OSError, ValueError):
        # Being created this very moment by another process, or a crashed half-made slot.
        return time.time() - state.stat().st_mtime < 30
    if owner["pid"] == 0:
        return True
    return pid_alive(owner["pid"]) and _process_start(owner["pid"]) == owner["start"]


@contextlib.contextmanager
def _slots_locked() -> Iterator[None]:
    """Claiming a slot and cleaning stale ones exclude each other, across processes.

    Without it, a cleaner that listed the slot folders just before another process claimed a
    slot, and its networks just after that process made them, took the new slot for a leftover
    and tore it down under its owner; the number was then claimed again and two node sets
    answered on the same addresses.
    """
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    with (RUN_ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def clean_stale() -> list[int]:
    """Tear down launches whose process died without cleaning up; returns their slots."""
    cleaned: list[int] = []
    with _slots_locked():
        for state in RUN_ROOT.iterdir():
            if state.name.isdigit() and not _owner_alive(state):
                teardown_slot(int(state.name))
                cleaned.append(int(state.name))
        # Network leftovers whose slot folder is already gone (networks listed first: a slot's
        # folder is made before its networks and removed after them).
        orphans = {
            int(m.group(1))
            for name in _namespaces() + _links()
            if (m := re.fullmatch(r"sn(?:br)?(\d+)(?:h\d+|-\d+)?", name))
        }
        slots = {int(p.name) for p in RUN_ROOT.iterdir() if p.name.isdigit()}
        for slot in sorted(orphans - slots):
            teardown_slot(slot)
            cleaned.append(slot)
    return cleaned


def _claim_slot(keep: str | None) -> tuple[int, Path]:
    with _slots_locked():
        return _claim_free_slot(keep)


def _claim_free_slot(keep: str | None) -> tuple[int, Path]:
    links = set(_links())
    for slot in range(1, MAX_SLOTS + 1):
        state = _slot_dir(slot)
        if bridge_name(slot) in links:
            continue
        try:
            state.mkdir()
        except FileExistsError:
            continue
        pid = 0 if keep else os.getpid()
        owner = {"pid": pid, "start": _process_start(pid) if pid else "", "keep": keep}
        (state / "owner.json").write_text(json.dumps(owner))
        return slot, state
    raise NodeError(
        f"all {MAX_SLOTS} node slots under {RUN_ROOT} are in use; run `python -m socialnet_ops.adapters.nodes clean`"
    )


def launch(
    groups: Mapping[str, int],
    *,
    keep: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> NodeSet:
    """Start nodes for `groups`; `keep` (an environment name) makes them outlive this process."""
    require_nodes()
    image = ensure_image(on_line)
    clean_stale()
    slot, state = _claim_slot(keep)
    nodes = NodeSet(slot, state, image)
    try:
        (state / "fs").mkdir()
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=8g", "tmpfs", str(state / "fs")])
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"socialnet-nodes-{slot}",
                "-f",
                str(nodes.key_file),
            ]
        )
        nodes._prepare_network()
        if groups:
            nodes.add(groups)
    except BaseException:
        nodes.close()
        raise
    return nodes


@contextlib.contextmanager
def running_nodes(groups: Mapping[str, int], **options: Any) -> Iterator[NodeSet]:
    """Nodes for the length of a `with` block, torn down also when the block fails."""
    nodes = launch(groups, **options)
    try:
        yield nodes
    finally:
        nodes.close()


# --- nodes kept for an environment (`local`) -----------------------------------------------------


def kept_slot(environment: str) -> int | None:
    if not RUN_ROOT.exists():
        return None
    for state in RUN_ROOT.iterdir():
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads((state / "owner.json").read_text())["keep"] == environment:
                return int(state.name)
    return None


def launcher_inventory_path(environment: str) -> Path:
    """Where the nodes kept for an environment publish their inventory for the configure flow."""
    return environment_state_dir(environment) / "ansible" / "launcher-inventory.yml"


def up(
    environment: str, groups: Mapping[str, int], on_line: Callable[[str], None] | None = None
) -> Path:
    """Start (or restart) the nodes of an environment and write their inventory."""
    down(environment)
    nodes = launch(groups, keep=environment, on_line=on_line)
    workers = [node.name for node in nodes.nodes if node.group == PREFECT_WORKER_NODES]
    return nodes.write_inventory(launcher_inventory_path(environment), prefect_workers=workers)


def down(environment: str) -> bool:
    slot = kept_slot(environment)
    launcher_inventory_path(environment).unlink(missing_ok=True)
    if slot is None:
        return False
    teardown_slot(slot)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m socialnet_ops.adapters.nodes up|down|image [ENV]`: nodes for `local` and by hand."""
    parser = argparse.ArgumentParser(prog="socialnet-nodes", description=main.__doc__)
    parser.add_argument("action", choices=["image", "up", "down", "clean"])
    parser.add_argument("environment", nargs="?", default="local")
    arguments = parser.parse_args(argv)
    try:
        if arguments.action == "image":
            print(ensure_image(print))
        elif arguments.action == "up":
            groups = load_environment(arguments.environment).ansible.groups
            print(up(arguments.environment, groups, on_line=print))
        elif arguments.action == "down":
            print("stopped" if down(arguments.environment) else "no nodes were running")
        else:
            print(f"cleaned slots: {clean_stale()}")
    except NodeError as error:
        print(f"socialnet-nodes: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
