"""deploy/install.sh into a scratch root: `make dist` builds the release from this
tree, the script installs it offline (its dependencies from a wheelhouse), and
every file it makes is checked for owner and mode; a second run changes nothing
and keeps an edited controller.toml; systemd-analyze verifies the unit.

The only step that may reach a package index is filling the wheelhouse (`pip
download`, from pip's cache when it can): the install itself runs with
`--no-index`, as an offline Pi would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zipfile import ZipFile

import pytest

from firmware.config import parse_config

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# What a build reads; tests/, docs/ and examples/ are not in the release.
SOURCES = ("firmware", "hal", "sim", "tools", "deploy", "pyproject.toml", "README.md", "Makefile")
SEEDED = ("passwd", "group", "shadow", "gshadow")  # a system's own files, as useradd finds them
VENV = "opt/alc/venv"

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="install.sh adds a user and chowns to it: it needs root, as on a Pi",
    ),
    pytest.mark.skipif(
        shutil.which("useradd") is None or shutil.which("make") is None,
        reason="needs useradd (shadow-utils 4.9+, for --prefix) and make",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("build") is None,
        reason="make dist needs the build package: `make setup` installs it (extra test)",
    ),
]


@dataclass(frozen=True)
class Install:
    root: Path
    dist: Path
    first: str  # what the first run printed
    second: str  # what the second run printed
    before_second: dict[str, Entry]
    after_second: dict[str, Entry]
    edited: str  # controller.toml as the technician left it


class Entry(NamedTuple):
    kind: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    target: str | None


def run(command: list[str | Path], cwd: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path under `root` (as `/...`): kind, mode, owner, size, mtime, link target."""
    seen = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        seen["/" + str(path.relative_to(root)).removeprefix(".")] = Entry(
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_mtime_ns,
            os.readlink(path) if path.is_symlink() else None,
        )
    return seen


def seed(root: Path) -> None:
    """The /etc of a Debian system, cut down: root, and dialout but no gpio group
    (Raspberry Pi OS has one; install.sh makes it where it is missing)."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\n")
    for name in SEEDED:
        (etc / name).chmod(0o640 if "shadow" in name else 0o644)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    skip = shutil.ignore_patterns("__pycache__")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=skip)
        else:
            shutil.copy2(REPO / name, source / name)
    # The Makefile's own dist recipe, with this venv; `-o setup`: it is set up.
    run(["make", "-s", "-C", source, "-o", "setup", "dist", f"BIN={BIN}"])
    dist = source / "dist"
    (wheel,) = dist.glob("alc-*.whl")
    wheelhouse = work / "wheelhouse"
    download: list[str | Path] = ["download", "-q", "-d", wheelhouse]
    download += [f"{wheel}[gpio,osdp]", "lgpio>=0.2.2"]
    run([BIN / "python", "-m", "pip", *download])
    root = work / "root"
    seed(root)
    options: list[str | Path] = ["--root", root, "--wheelhouse", wheelhouse]
    # The release's script finds the wheel beside itself; the checkout's in ../dist.
    first = run(["bash", dist / "install.sh", *options])
    config = root / "etc/alc/controller.toml"
    edited = config.read_text().replace('site = "demo"', 'site = "club7"')
    config.write_text(edited)
    before = snapshot(root)
    second = run(["bash", source / "deploy/install.sh", *options])
    yield Install(root, dist, first, second, before, snapshot(root), edited)


def passwd_entry(root: Path, name: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"no user {name} in {root}/etc/passwd")


def group_members(root: Path) -> dict[str, set[str]]:
    groups = {}
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, members = line.split(":")
        groups[name] = set(filter(None, members.split(",")))
    return groups


def test_make_dist_builds_the_sdist_and_a_wheel_that_carries_what_install_sh_needs(
    install: Install,
) -> None:
    names = sorted(p.name for p in install.dist.iterdir())
    assert names == ["alc-0.1.0-py3-none-any.whl", "alc-0.1.0.tar.gz", "install.sh"]
    with ZipFile(install.dist / names[0]) as wheel:
        files = set(wheel.namelist())
    share = "alc-0.1.0.data/data/share/alc/"
    assert {share + n for n in ("install.sh", "alc-controller.service")} <= files
    assert share + "controller.example.toml" in files
    assert "firmware/kiosk/static/index.html" in files
    assert not any(n.startswith("tests/") for n in files)


def test_the_user_the_groups_and_every_file_with_its_owner_and_mode(install: Install) -> None:
    root = install.root
    user = passwd_entry(root, "alc")
    uid, gid = int(user[2]), int(user[3])
    assert 0 < uid < 1000 and user[5:] == ["/var/lib/alc", "/usr/sbin/nologin"]
    groups = group_members(root)
    assert "alc" in groups["gpio"] and "alc" in groups["dialout"]
    assert "alc" in groups  # its own group, the unit's Group=alc

    alc, ROOT = (uid, gid), (0, 0)
    expected: dict[str, tuple[int, int, tuple[int, int]]] = {
        "/opt/alc": (stat.S_IFDIR, 0o755, ROOT),
        "/opt/alc/installed": (stat.S_IFREG, 0o644, ROOT),
        "/etc/alc": (stat.S_IFDIR, 0o700, alc),
        "/etc/alc/controller.toml": (stat.S_IFREG, 0o600, alc),
        "/etc/alc/keys": (stat.S_IFDIR, 0o700, alc),
        "/var/lib/alc": (stat.S_IFDIR, 0o700, alc),
        "/etc/systemd/system/alc-controller.service": (stat.S_IFREG, 0o644, ROOT),
        "/etc/udev/rules.d/60-alc-gpio.rules": (stat.S_IFREG, 0o644, ROOT),
        "/usr/local/bin/alc": (stat.S_IFLNK, 0o777, ROOT),
    }
    seeded = {f"/etc/{n}" for n in SEEDED} | {f"/etc/{n}-" for n in SEEDED}  # useradd's backups
    for path, entry in install.after_second.items():
        got = (entry.kind, entry.mode, (entry.uid, entry.gid))
        if path in expected:
            assert got == expected.pop(path), path
        elif path in seeded:
            continue
        elif path.startswith(f"/{VENV}/") or path == f"/{VENV}":
            # Root's, and nobody else may write: the service cannot change its
            # code. (A link's own mode means nothing: its target's is checked.)
            writable = entry.mode & 0o022 and entry.kind != stat.S_IFLNK
            assert got[2] == ROOT and not writable, (path, oct(entry.mode))
        else:  # the parents: /, /etc, /opt, /usr/local/bin, ...
            assert got == (stat.S_IFDIR, 0o755, ROOT), (path, got)
    assert not expected, f"not made: {sorted(expected)}"
    assert os.readlink(root / "usr/local/bin/alc") == "/opt/alc/venv/bin/alc"


def test_the_unit_and_the_config_are_the_releases(install: Install) -> None:
    root = install.root
    unit = root / "etc/systemd/system/alc-controller.service"
    assert unit.read_text() == (REPO / "deploy/alc-controller.service").read_text()
    assert "ExecStart=/opt/alc/venv/bin/alc controller --config /etc/alc/controller.toml" in (
        unit.read_text().splitlines()
    )
    # The first run's config is the example with its master tag commented out:
    # it parses, it is wired as the example, and nothing opens without data.
    example = tomllib.loads((REPO / "deploy/controller.example.toml").read_text())
    installed = tomllib.loads(install.edited.replace('site = "club7"', 'site = "demo"'))
    assert example.pop("masters") and "masters" not in installed
    assert installed == example
    config = parse_config(Path("/etc/alc/controller.toml"), installed)
    assert config.masters == frozenset() and config.wiring.doors


def test_the_venv_holds_the_built_wheel_and_alc_runs(install: Install, tmp_path: Path) -> None:
    root = install.root
    python = root / VENV / "bin/python"
    code = (
        "import json, lgpio, gpiozero, serial, osdp, tools.hw_test as t\n"
        "from importlib.metadata import distribution\n"
        "d = distribution('alc')\n"
        "print(json.dumps([t.__file__, d.version, d.read_text('direct_url.json')]))\n"
    )
    # (Importing lgpio leaves its FIFO in the working directory: not in the root.)
    module, version, direct = json.loads(run([python, "-c", code], cwd=tmp_path))
    assert Path(module).is_relative_to(root / VENV)
    assert Path(module).read_bytes() == (REPO / "tools/hw_test.py").read_bytes()
    assert version == "0.1.0"
    assert json.loads(direct)["url"] == (install.dist / "alc-0.1.0-py3-none-any.whl").as_uri()
    usage = run([root / VENV / "bin/alc", "--help"])
    assert "\n  hw " in usage and "\n  controller " in usage


def test_alc_hw_test_in_the_venv_loads_lgpio_away_from_the_working_directory(
    install: Install, tmp_path: Path
) -> None:
    if any(Path("/dev").glob("gpiochip*")):
        pytest.skip("this machine has GPIO chips: the check would switch GPIO 17")
    config = tmp_path / "controller.toml"
    config.write_text(
        '[controller]\nsite = "demo"\nid = "ctl1"\ndata_dir = "/var/lib/alc"\n'
        'keys_dir = "/etc/alc/keys"\n[[doors]]\nid = "front"\nrelay = 17\nfail = "secure"\n'
    )
    home = tmp_path / "home"  # where a technician runs it from
    home.mkdir()
    alc = install.root / VENV / "bin/alc"
    done = subprocess.run(
        [alc, "hw", "test", "--config", config, "--seconds", "0"],
        capture_output=True,
        text=True,
        check=False,
        cwd=home,
    )
    # The venv's gpiozero tried lgpio (no Pi here, so no driver works), and
    # lgpio's FIFO went to a directory of its own, not to the technician's.
    assert done.returncode == 2, done.stderr
    assert "Falling back from lgpio" in done.stderr
    assert "door:front (GPIO 17): no GPIO driver works on this machine" in done.stderr
    assert list(home.iterdir()) == []


def test_the_run_prints_the_next_three_steps(install: Install) -> None:
    steps = install.first[install.first.index("Next") :]
    assert re.findall(r"^  (\d)\. ", steps, re.MULTILINE) == ["1", "2", "3"]
    assert "sudo -u alc alc hw test --config /etc/alc/controller.toml" in steps
    assert "sudo systemctl enable --now alc-controller" in steps


def test_a_second_run_changes_nothing_and_keeps_the_edited_config(install: Install) -> None:
    assert install.after_second == install.before_second
    assert (install.root / "etc/alc/controller.toml").read_text() == install.edited
    assert "install.sh: keeping /etc/alc/controller.toml" in install.second
    assert "writing" not in install.second and "installing" not in install.second


def test_systemd_analyze_verifies_the_installed_unit(install: Install, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the systemd package)")
    host_units = Path("/lib/systemd/system")
    if not (host_units / "sysinit.target").exists():
        pytest.skip("no systemd units on this machine to verify against")
    # A copy of the scratch root: verify resolves the unit's targets and checks
    # its ExecStart under --root, so they need to be there; the root the other
    # tests look at stays as install.sh left it.
    root = tmp_path / "root"
    shutil.copytree(install.root, root, symlinks=True)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for target in [*host_units.glob("*.target"), *host_units.glob("*.slice")]:
        shutil.copy(target, units)
    unit = "/etc/systemd/system/alc-controller.service"
    done = subprocess.run(
        [analyze, "verify", f"--root={root}", unit], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # Unknown keys and bad values are only warnings: none may name the unit.
    assert "alc-controller.service" not in done.stderr, done.stderr


def test_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    script = REPO / "deploy/install.sh"
    root = tmp_path / "root"
    seed(root)
    (tmp_path / "other-1.0-py3-none-any.whl").touch()
    # Without --wheel: no wheel beside the script, or more than one.
    alone, several = tmp_path / "alone", tmp_path / "several"
    for place in (alone, several):
        place.mkdir()
        shutil.copy(script, place)
    for version in ("0.1.0", "0.2.0"):
        (several / f"alc-{version}-py3-none-any.whl").touch()
    cases: list[tuple[Path, list[str | Path], str]] = [
        (script, ["--wheel", tmp_path / "none.whl"], f"--wheel {tmp_path}/none.whl: no such file"),
        (script, ["--bogus"], "unknown option --bogus"),
        (script, ["--root", tmp_path / "nowhere"], f"--root {tmp_path}/nowhere: no such directory"),
        (script, ["--wheel", tmp_path / "other-1.0-py3-none-any.whl"], "is not an alc wheel"),
        (alone / "install.sh", [], "no alc-*.whl beside"),
        (several / "install.sh", [], "several wheels"),
    ]
    for path, args, message in cases:
        done = subprocess.run(
            ["bash", path, "--root", root, *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 1, args
        assert done.stderr.startswith("install.sh: ") and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
    assert sorted(p.name for p in (root / "etc").iterdir()) == sorted(SEEDED)  # nothing made
