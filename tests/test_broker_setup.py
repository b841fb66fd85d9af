"""`alc broker init|add|check` on disk (the broker running them is
tests/test_broker_locked.py): the files and their modes, the exact ACL lines of
PROTOCOL.md s9, bad input that changes nothing, and `check` finding what a hand
edit opened."""

from __future__ import annotations

import os
import pwd
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from firmware.mqtt import MAX_PACKET_BYTES
from tests.test_deploy import unit_settings
from tools.broker_setup import conf
from tools.broker_setup.layout import Layout
from tools.broker_setup.main import main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def files_of(dir: Path) -> dict[str, bytes]:
    """Every file under `dir` and its bytes."""
    return {str(p.relative_to(dir)): p.read_bytes() for p in sorted(dir.rglob("*")) if p.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def made(tmp_path: Path) -> Layout:
    """A broker directory `init` made for broker.club.lan."""
    dir = tmp_path / "broker"
    assert main(["init", str(dir), "--host", "broker.club.lan", "--also", "192.168.1.10"]) == 0
    return Layout.at(dir)


def test_init_writes_a_tls_only_config_a_ca_and_a_certificate_for_the_host(made: Layout) -> None:
    for private in (made.ca_key, made.server_key, made.passwd, made.acl):
        assert mode(private) == 0o600, private
    assert mode(made.dir) == 0o700 and mode(made.accounts) == 0o700
    assert made.passwd.read_text() == ""
    settings = conf.parse(made.conf.read_text(), where="test")
    assert settings.one("allow_anonymous") == "false"
    assert settings.one("password_file") == str(made.passwd)
    assert settings.one("acl_file") == str(made.acl)
    assert settings.one("message_size_limit") == str(MAX_PACKET_BYTES)
    assert settings.one("max_packet_size") == str(MAX_PACKET_BYTES)
    assert 0 < int(settings.one("max_queued_messages") or 0) <= 100_000
    assert int(settings.one("max_queued_bytes") or 0) > 0
    assert settings.one("persistence") == "true"
    assert settings.one("persistence_location") == f"{made.dir}/"
    assert settings.one("port") is None  # mosquitto's old plaintext default listener
    [listener] = settings.listeners
    assert (listener.port, listener.bind) == ("8883", None)
    assert listener.one("certfile") == str(made.server_cert)
    assert listener.one("keyfile") == str(made.server_key)
    assert listener.one("use_username_as_clientid") == "true"
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in san] == ["broker.club.lan", "192.168.1.10"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_deploy_example_is_what_init_writes(tmp_path: Path) -> None:
    example = (DEPLOY / "mosquitto.example.conf").read_text()
    layout = Layout(Path("/var/lib/alc-broker"))
    assert example == conf.render(layout, conf.Options())


def test_init_never_overwrites_a_broker_directory(
    made: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    before = files_of(made.dir)
    assert main(["init", str(made.dir), "--host", "other.lan"]) == 2
    assert "already holds mosquitto.conf" in capsys.readouterr().err
    assert files_of(made.dir) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "not a name"], "neither a host name nor an IP address"),
        (["--host", "ok.lan", "--also=-bad-.lan"], "neither a host name"),
        (["--host", "ok.lan", "--port", "0"], "--port must be 1 to 65535"),
        (["--host", "ok.lan", "--port", "70000"], "--port must be 1 to 65535"),
        (["--host", "ok.lan", "--bind", "eth0"], "--bind must be an IP address"),
    ],
)
def test_init_with_bad_arguments_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    dir = tmp_path / "broker"
    assert main(["init", str(dir), *args]) == 2
    assert says in capsys.readouterr().err
    assert not dir.exists()


def test_add_writes_the_accounts_exact_acl_lines_and_password_files(
    made: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["add", str(made.dir), "--site", "demo", "--controller", "ctl1"]) == 0
    out = capsys.readouterr().out
    assert main(["add", str(made.dir), "--site", "demo", "--hub", "hub"]) == 0
    assert 'username = "demo.ctl1"' in out and 'host = "broker.club.lan"' in out
    blocks = made.acl.read_text().split("\n\n")[1:]
    assert blocks[0].splitlines() == [
        "# controller ctl1 of site demo",
        "user demo.ctl1",
        "topic read alc/demo/ctl1/data",
        "topic read alc/demo/ctl1/cmd",
        "topic read alc/demo/ctl1/ack",
        "topic write alc/demo/ctl1/state",
        "topic write alc/demo/ctl1/sync",
        "topic write alc/demo/ctl1/events",
        "topic write alc/demo/ctl1/reply",
    ]
    assert blocks[1].splitlines() == [
        "# hub side of site demo",
        "user hub",
        "topic read alc/demo/+/state",
        "topic read alc/demo/+/sync",
        "topic read alc/demo/+/events",
        "topic read alc/demo/+/reply",
        "topic write alc/demo/+/data",
        "topic write alc/demo/+/cmd",
        "topic write alc/demo/+/ack",
    ]
    lines = made.passwd.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["demo.ctl1", "hub"]
    assert all(line.split(":", 1)[1].startswith("$7$") for line in lines)  # PBKDF2-SHA512
    secrets = [made.account_password(user) for user in ("demo.ctl1", "hub")]
    assert all(mode(s) == 0o600 for s in secrets)
    passwords = [s.read_text() for s in secrets]
    assert all(len(p.strip()) >= 40 and p.endswith("\n") for p in passwords)
    assert passwords[0] != passwords[1]
    assert mode(made.passwd) == 0o600 and mode(made.acl) == 0o600


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--site", "demo", "--controller", "ctl1"], "account 'demo.ctl1' exists already"),
        (["--site", "demo", "--hub", "hub"], "account 'hub' exists already"),
        (["--site", "de mo", "--controller", "ctl2"], "--site 'de mo' must be"),
        (["--site", "demo", "--controller", "a.b"], "--controller 'a.b' must be"),
        (["--site", "demo", "--hub", "x", "--root", "a/b"], "--root 'a/b' must be"),
    ],
)
def test_add_refuses_a_taken_or_bad_name_and_changes_nothing(
    made: Layout, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert main(["add", str(made.dir), "--site", "demo", "--controller", "ctl1"]) == 0
    assert main(["add", str(made.dir), "--site", "demo", "--hub", "hub"]) == 0
    capsys.readouterr()
    before = files_of(made.dir)
    assert main(["add", str(made.dir), *args]) == 2
    assert says in capsys.readouterr().err
    assert files_of(made.dir) == before


def test_add_and_check_need_a_broker_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["add", str(tmp_path), "--site", "s", "--hub", "h"], ["check", str(tmp_path)]):
        assert main(command) == 2
        assert "run `alc broker init` first" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_check_says_what_each_account_may_do(
    made: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["add", str(made.dir), "--site", "demo", "--controller", "ctl1"]) == 0
    assert main(["add", str(made.dir), "--site", "demo", "--hub", "hub"]) == 0
    capsys.readouterr()
    assert main(["check", str(made.dir)]) == 0
    out = capsys.readouterr().out
    assert "listener 8883 on every address: TLS, certificate for broker.club.lan" in out
    assert "anonymous clients: refused" in out
    assert (
        "  demo.ctl1 (controller ctl1 of site demo)\n"
        "    subscribes to and receives: alc/demo/ctl1/data, alc/demo/ctl1/cmd, alc/demo/ctl1/ack\n"
        "    publishes to: alc/demo/ctl1/state, alc/demo/ctl1/sync, alc/demo/ctl1/events, "
        "alc/demo/ctl1/reply\n"
    ) in out
    assert "    subscribes to and receives: alc/demo/+/state, alc/demo/+/sync" in out
    assert out.endswith("problems: none\n")


def test_check_finds_what_a_hand_edit_opened(
    made: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["add", str(made.dir), "--site", "demo", "--controller", "ctl1"]) == 0
    text = made.conf.read_text()
    text = text.replace("allow_anonymous false", "allow_anonymous true")
    text = text.replace("use_username_as_clientid true\n", "")
    text = text.replace(f"max_packet_size {MAX_PACKET_BYTES}", "max_packet_size 10000000")
    made.conf.write_text(text + "listener 1883\n")
    with made.acl.open("a") as acl:
        acl.write("topic readwrite alc/demo/ctl1/#\nuser ghost\ntopic alc/#\n")
    made.server_key.chmod(0o644)
    other = Layout.at(made.dir.parent / "other")
    assert main(["init", str(other.dir), "--host", "broker.club.lan"]) == 0
    made.server_cert.write_bytes(other.server_cert.read_bytes())  # another CA's
    capsys.readouterr()
    assert main(["check", str(made.dir)]) == 1
    out = capsys.readouterr().out
    for problem in (
        "listener 1883 on every address has no TLS",
        "allow_anonymous true: anyone may connect",
        "use_username_as_clientid is not true",
        "max_packet_size is 10000000",
        "demo.ctl1 may reach every topic under 'alc/demo/ctl1/#'",
        "ghost may reach every topic under 'alc/#'",
        f"{made.server_key} can be read by other users (mode 0644): chmod 600",
        f"{made.server_cert} is not signed by cafile {made.ca_cert}",
    ):
        assert problem in out, problem
    assert "  ghost\n    no password: cannot log in" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_files_mosquitto_reads_take_the_directorys_owner(tmp_path: Path) -> None:
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user")
    dir = tmp_path / "broker"
    dir.mkdir(mode=0o700)
    os.chown(dir, user.pw_uid, user.pw_gid)
    assert main(["init", str(dir), "--host", "broker.lan"]) == 0
    assert main(["add", str(dir), "--site", "demo", "--hub", "hub"]) == 0
    layout = Layout.at(dir)
    owned = {p.name: p.stat().st_uid for p in layout.made_files()}
    for name in ("mosquitto.conf", "ca.crt", "server.crt", "server.key", "passwd", "acl"):
        assert owned[name] == user.pw_uid, name
    # mosquitto never needs the CA's key or an account's password.
    assert owned["ca.key"] == 0
    assert layout.account_password("hub").stat().st_uid == 0


def test_the_broker_unit_runs_the_example_config_as_mosquitto_and_reloads_on_hup() -> None:
    unit = unit_settings(DEPLOY / "alc-broker.service")
    assert unit[("Service", "User")] == ["mosquitto"]
    assert unit[("Service", "ExecStart")] == [
        "/usr/sbin/mosquitto -c /var/lib/alc-broker/mosquitto.conf"
    ]
    assert unit[("Service", "ExecReload")] == ["/bin/kill -HUP $MAINPID"]
    assert unit[("Service", "ReadWritePaths")] == ["/var/lib/alc-broker"]
    example = conf.parse((DEPLOY / "mosquitto.example.conf").read_text(), where="example")
    assert example.one("persistence_location") == "/var/lib/alc-broker/"


def test_bench_topics_are_granted_only_with_bench(made: Layout) -> None:
    assert main(["add", str(made.dir), "--site", "demo", "--controller", "b1", "--bench"]) == 0
    assert main(["add", str(made.dir), "--site", "demo", "--hub", "sim", "--bench"]) == 0
    controller, hub = made.acl.read_text().split("\n\n")[1:]
    assert [line for line in controller.splitlines() if "bench" in line] == [
        "# controller b1 of site demo, bench",
        "topic read alc/demo/b1/bench/in",
        "topic write alc/demo/b1/bench/out",
    ]
    assert [line for line in hub.splitlines() if "bench" in line] == [
        "# hub side of site demo, bench",
        "topic read alc/demo/+/bench/out",
        "topic write alc/demo/+/bench/in",
    ]


def test_cert_issues_a_certificate_from_the_brokers_ca_for_another_server(
    made: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kiosk"
    args = ["cert", str(made.dir), "--host", "kiosk.club.lan", "--also", "192.168.1.20"]
    assert main([*args, "--out", str(out)]) == 0
    crt, key = out / "kiosk.club.lan.crt", out / "kiosk.club.lan.key"
    assert mode(key) == 0o600 and mode(crt) == 0o644
    issued = x509.load_pem_x509_certificate(crt.read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(made.ca_cert.read_bytes()))
    san = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in san] == ["kiosk.club.lan", "192.168.1.20"]
    # The key is the certificate's: a TLS server loads the pair.
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(crt, key)
    # Never over an existing pair; a bad name writes nothing.
    before = files_of(out)
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    assert "exist already: nothing written" in capsys.readouterr().err
    assert main(["cert", str(made.dir), "--host", "bad name", "--out", str(out)]) == 2
    assert files_of(out) == before
