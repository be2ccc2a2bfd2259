"""pxswitch configuration: TOML and --port specs, errors that name line and field."""

from __future__ import annotations

import re

import pytest

from pxproto.switch.cli import main
from pxproto.switch.config import ConfigError, load_text, parse_port_arg

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
