"""``pxorch run``, ``deploy``, ``scale`` and ``status`` against live pxkernel servers over pxswitch UDP ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pxproto.dime.keys import fresh_keys, write_keyfile
from pxproto.orch.demo import ROOT, SERVICE_FILE, Demo, free_udp_ports
from pxproto.signing import write_signing_key, write_verify_keys


def pxorch(*args: str, env: dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pxproto.orch.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def status(control: str, env: dict[str, str]) -> dict[str, Any]:
    r = pxorch("status", "--control", control, "--json", env=env)
    assert r.returncode == 0, r.stderr
    reply: dict[str, Any] = json.loads(r.stdout)
    return reply


def wait_status(control: str, env: dict[str, str], cond: Any, limit: float, daemon_log: Path) -> dict[str, Any]:
    end = time.monotonic() + limit
    while True:
        s = status(control, env)
        if cond(s):
            return s
        assert time.monotonic() < end, (
            s["pool"],
            s["services"],
            [e["text"] for e in s["events"]],
            daemon_log.read_text(),
        )
        time.sleep(0.3)


def test_run_deploy_scale_status_on_live_kernels(tmp_path: Path) -> None:
    # The kernels beat at the tolerant detector's period from the start (not the demo's 50 ms): before the
    # deployment sets it, 4 missed 50 ms beats (200 ms) made every idle DIME of a busy host "dead" and RESET.
    demo = Demo(tmp_path / "out", quiet=True, workdir=tmp_path / "work", regulator={"heartbeat_ms": 100})
    wd = demo.wd
    ports = free_udp_ports(4)
    store, keyfile = wd / "central", wd / "cluster.key"
    store.mkdir()
    write_keyfile(keyfile, fresh_keys())
    write_verify_keys(wd / "verify.pub", [demo.signer])
    write_signing_key(wd / "signing.key", demo.signer)
    control = str(wd / "pxorch.sock")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = wd / "pxorch.log"
    # A CI host may be far busier than its cores: a tolerant detector (as in the demo test), same workflow.
    service = wd / "wordcount.service.toml"
    text = SERVICE_FILE.read_text().replace('package = "wordcount"', f'package = "{SERVICE_FILE.parent / "wordcount"}"')
    for k, v in (("heartbeat_ms", 100), ("missed", 4), ("confirm_ms", 100), ("confirm_tries", 3)):
        text = re.sub(rf"(?m)^{k} = .*$", f"{k} = {v}", text)
    service.write_text(text)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        demo.start_switch(ports, wd / "capture.pcapng")
        time.sleep(0.3)
        for i in range(3):
            demo.start_kernel(i, ports[i], store, keyfile)
        with open(log, "wb") as f:
            cmd = [sys.executable, "-m", "pxproto.orch.cli", "run", "--port", f"udp:127.0.0.1:{ports[3]}"]
            cmd += ["--key", str(keyfile), "--store", str(store), "--control", control, "--service", str(service)]
            cmd += ["--signing-key", str(wd / "signing.key")]
            daemon = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        end = time.monotonic() + 120
        while not os.path.exists(control):
            assert daemon.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.1)

        def discovered(s: dict[str, Any]) -> bool:
            return bool(s["pool"]["free"] == 12 and len({r["server"] for r in s["rows"]}) == 3)

        s = wait_status(control, env, discovered, 120, log)
        assert s["wire"]["rejected"] == 0

        r = pxorch("deploy", str(service), "--control", control, env=env)
        assert r.returncode == 0 and "deploying wordcount" in r.stdout, r.stderr
        again = pxorch("deploy", str(service), "--control", control, env=env)
        assert again.returncode == 1 and "already deployed" in again.stderr

        # The state is waited for, not sampled once: on a host far busier than its cores a DIME may be declared
        # dead and its replica replaced, and a snapshot taken mid-repair counts one replica fewer or more.
        def deployed(s: dict[str, Any]) -> bool:
            counts = [
                len(s["services"].get("wordcount", {}).get(k, ())) for k in ("source", "parse", "transform", "sink")
            ]
            return (
                any(e["kind"] == "ServiceDeployed" for e in s["events"])
                and counts == [1, 1, 2, 1]
                and (s["pool"]["busy"] == 5)
            )

        s = wait_status(control, env, deployed, 120, log)

        r = pxorch("scale", "wordcount", "transform", "3", "--control", control, env=env)
        assert r.returncode == 0, r.stderr
        bad = pxorch("scale", "wordcount", "nosuch", "3", "--control", control, env=env)
        assert bad.returncode == 1 and "nosuch" in bad.stderr

        def three_running(s: dict[str, Any]) -> bool:
            rows = [x for x in s["rows"] if x["stage"] == "wordcount.transform" and x["replica"] == "running"]
            running = {x["stage"] for x in s["rows"] if x["replica"] == "running"}
            stages = {f"wordcount.{k}" for k in ("source", "parse", "transform", "sink")}
            return len(rows) == 3 and s["pool"]["busy"] == 6 and running == stages

        wait_status(control, env, three_running, 120, log)

        # The operator's table (not JSON) names every server and the service's stages (read again while a repair
        # the busy host caused is still under way).
        end = time.monotonic() + 120
        while True:
            r = pxorch("status", "--control", control, env=env)
            assert r.returncode == 0, r.stderr
            if "wordcount.transform" in r.stdout and "service wordcount: source x1, parse x1, transform x3" in r.stdout:
                break
            assert time.monotonic() < end, r.stdout
            time.sleep(0.3)
        # The sink is recording results in its server's local store.
        end = time.monotonic() + 120
        while not demo.sink_records():
            assert time.monotonic() < end, demo.logs()
            time.sleep(0.3)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        demo.stop_all()
    assert daemon.returncode == 0, log.read_text()
    assert not os.path.exists(control), "the daemon left its control socket behind"
