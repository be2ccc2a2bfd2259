"""pxswitch configuration: TOML and --port specs, errors that name line and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pxproto.switch.cli import _parser, build_config, main
from pxproto.switch.config import ConfigError, PortValueError, load_file, load_text, parse_port_arg

GOOD = """
[switch]
validation = "header"
queue_data = 128

[[port]]
name = "vm1"
type = "stream"
address = "/tmp/vm1.sock"
listen = true

[[port]]
type = "vxlan"
remote = ["10.0.0.2", "10.0.0.3:4790"]
vni = 7
"""


def test_good_file() -> None:
    cfg = load_text(GOOD, "sw.toml")
    assert cfg.policy.queue_data == 128
    assert [(p.name, p.type) for p in cfg.ports] == [("vm1", "stream"), ("vxlan1", "vxlan")]
    assert cfg.ports[1].get("remote") == ("10.0.0.2", "10.0.0.3:4790")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("listen = true", 'listen = "yes"'), "sw.toml line 10: port[0].listen"),
        (GOOD.replace("vni = 7", "vni = 7\nspeed = 3"), "sw.toml line 16: port[1].speed"),
        (GOOD.replace("queue_data = 128", "queue_data = 0"), "sw.toml line 4: switch.queue_data"),
        (GOOD.replace('validation = "header"', 'validation = "deep"'), "sw.toml line 3: switch.validation"),
        (GOOD.replace('type = "vxlan"', 'type = "vxlan"\nname = "vm1"'), "two ports are named 'vm1'"),
        (GOOD.replace("[[port]]\ntype", "[[port]]\nkind"), "sw.toml line 12: port[1].type"),
        ("[switch\n", "sw.toml: "),
    ],
)
def test_errors_name_line_and_field(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_text(text, "sw.toml")
    assert where in str(e.value)


def test_port_args() -> None:
    p = parse_port_arg("vxlan:remote=10.0.0.1,remote=10.0.0.2,vni=5,name=up", 0)
    assert p.name == "up" and p.get("remote") == ("10.0.0.1", "10.0.0.2") and p.get("vni") == 5
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        parse_port_arg("udp:local=127.0.0.1:1,bogus=1", 0)
    with pytest.raises(ConfigError, match="needs 'interface'"):
        parse_port_arg("afpacket:", 0)


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--port", "warp:x=1"]) == 2
    assert "port type 'warp'" in capsys.readouterr().err
    assert main(["stats", "--control", "/nonexistent/pxswitch.sock"]) == 1


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("udp:local=127.0.0.1:1,max_macs=-1", "max_macs must be 0 or more, not -1"),
        ("udp:local=127.0.0.1:1,mtu=-5", "mtu must be 0 or more, not -5"),
        ("udp:local=127.0.0.1:1,mtu=big", "mtu must be int, not str 'big'"),
    ],
)
def test_a_negative_or_non_numeric_port_number_is_named(arg: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        parse_port_arg(arg, 0)


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        (
            "afpacket:interface=lo,ring=v3",
            "port afpacket0 (afpacket): cannot open: --port '{arg}' (ring): ring must be int",
        ),
        ("udp:local=127.0.0.1:1,mtu=-5", "port udp0 (udp): cannot open: --port '{arg}' (mtu): mtu must be 0 or more"),
        (
            "stream:address=/tmp/x.sock,listen=yes",
            "port stream0 (stream): cannot open: --port '{arg}' (listen): listen",
        ),
    ],
)
def test_a_port_value_of_the_wrong_type_stops_the_switch_as_a_port_that_cannot_open(
    arg: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: a port that cannot open (an unknown `ring`, ...) stops pxswitch run with one line naming the port
    and the reason, and exit status 1; before, ring=v3 was caught while parsing and exited 2."""
    assert main(["run", "--port", arg, "--control", "/nonexistent/pxswitch.sock"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pxswitch: " + says.format(arg=arg)) and err.count("\n") == 1, err


def test_a_port_value_of_the_wrong_type_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sw.toml"
    path.write_text(GOOD.replace("vni = 7", 'vni = "seven"'))
    with pytest.raises(
        PortValueError, match=re.escape(f"port vxlan1 (vxlan): cannot open: {path} line 15: port[1].vni")
    ):
        load_file(str(path))


def test_default_port_names_are_numbered_in_order(tmp_path: Path) -> None:
    """udp0, udp1, stream2: each port's position (they ran 0, 2, 4 while the list grew under its own count)."""
    ports = ["udp:local=127.0.0.1:1", "udp:local=127.0.0.1:2", "stream:address=/tmp/x.sock"]
    args = _parser().parse_args(["run", *(a for p in ports for a in ("--port", p))])
    assert [p.name for p in build_config(args).ports] == ["udp0", "udp1", "stream2"]
    path = tmp_path / "sw.toml"
    path.write_text(GOOD)
    args = _parser().parse_args(["run", "--config", str(path), "--port", ports[0], "--port", ports[1]])
    assert [p.name for p in build_config(args).ports] == ["vm1", "vxlan1", "udp2", "udp3"]
