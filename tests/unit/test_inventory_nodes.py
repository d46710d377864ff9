"""The node launcher's pure parts: names, addresses, mirrors, the image recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from socialnet_ops.adapters import nodes
from socialnet_ops.adapters.nodes import ImageRecipe, debian_mirrors, node_names

pytestmark = pytest.mark.unit


def test_node_names_follow_the_groups_and_number_across_them() -> None:
    assert node_names({"control_plane": 1, "workers": 3}) == [
        ("cp-0", "control_plane"),
        ("worker-1", "workers"),
        ("worker-2", "workers"),
        ("worker-3", "workers"),
    ]
    assert node_names({"edge_nodes": 1}) == [("edge-nodes-0", "edge_nodes")]


def test_addresses_stay_in_the_launchers_private_range() -> None:
    assert nodes.host_address(7) == "10.213.7.1"
    assert nodes.node_address(7, 0) == "10.213.7.10"
    assert nodes.netns_name(7, 2) == "sn7-2"
    # Interface names must fit IFNAMSIZ (15 characters) for the largest slot and index.
    assert len(nodes.host_veth_name(nodes.MAX_SLOTS, 99)) <= 15
    assert len(nodes.bridge_name(nodes.MAX_SLOTS)) <= 15


def test_mirrors_come_from_the_machines_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list.d" / "other.list").write_text(
        "deb [arch=amd64] https://packages.example/apt stable main\n"
    )
    assert debian_mirrors(tmp_path) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert debian_mirrors(empty) == (
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    )


def test_one_line_sources_are_read_too(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "deb http://ftp.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
    )
    assert debian_mirrors(tmp_path) == (
        "http://ftp.example/debian",
        "http://security.example/debian-security",
    )


def test_the_image_key_follows_the_packages_and_the_mirror() -> None:
    recipe = ImageRecipe("bookworm", "http://m/debian", "http://m/debian-security", ("a",), ("b",))
    same = ImageRecipe("bookworm", "http://m/debian", "http://m/debian-security", ("a",), ("b",))
    assert recipe.key == same.key
    assert (
        recipe.key
        != ImageRecipe(
            "bookworm", "http://m/debian", "http://m/debian-security", ("a",), ("b", "c")
        ).key
    )
    assert (
        recipe.key
        != ImageRecipe(
            "bookworm", "http://n/debian", "http://m/debian-security", ("a",), ("b",)
        ).key
    )


def test_the_image_downloads_the_role_packages_from_the_machines_mirror() -> None:
    recipe = ImageRecipe(
        "bookworm", "http://m/debian", "http://m/debian-security", ("systemd", "sudo"), ("chrony",)
    )
    command = recipe.mmdebstrap_command(Path("/tmp/rootfs"))
    assert command[0] == "mmdebstrap"
    assert "--include=systemd,sudo" in command
    assert any("--download-only" in part and "chrony" in part for part in command)
    assert command[-4:] == [
        "/tmp/rootfs",
        "deb http://m/debian bookworm main",
        "deb http://m/debian bookworm-updates main",
        "deb http://m/debian-security bookworm-security main",
    ]


def test_requirements_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes.os, "geteuid", lambda: 1000)
    assert "root" in (nodes.requirements_problem() or "")
    monkeypatch.setattr(nodes.os, "geteuid", lambda: 0)
    monkeypatch.setattr(nodes.shutil, "which", lambda tool: None)
    assert "install-node-tools.sh" in (nodes.requirements_problem() or "")
