"""The files in deploy/ agree with the code and with each other: the systemd units run commands
that exist with the right stop behaviour, nginx passes only the public paths and limits bodies
like the app, the example configs load, and docs/operations.md's config snippets are valid.
Where nginx / systemd-analyze are installed, the real tools check the files too."""

from __future__ import annotations

import http.client
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from app.cli.main import main as cli_main
from app.core.config import build, load
from app.core.redis import parse_sentinel_url
from tests.helpers import free_port, live_event, signed_path, wait_until
from workers import actions

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
NGINX = DEPLOY / "nginx" / "mediahook.conf"
INSTALL_SRC = "/opt/mediahook/src/"  # where docs/operations.md puts the source tree
INSTALL_BIN = "/opt/mediahook/venv/bin/"
SECRETS = {"MEDIAHOOK_METASTUDIO_KEY": "k" * 32, "MEDIAHOOK_CDNETWORKS_TOKEN": "t" * 16,
           "MEDIAHOOK_ADMIN_TOKEN": "a" * 32}
PUBLIC_HOST = "hooks.example.com"


# --- systemd ---------------------------------------------------------------------------------

def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values]}} (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), raw
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{name}: not a key=value line: {raw!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        current.setdefault(key, []).append(value)
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    assert len(section.get(key, [])) == 1, f"{key}: {section.get(key)}"
    return section[key][0]


SERVICES = ("mediahook-web.service", "mediahook-worker@.service")


def test_the_unit_files_are_the_expected_ones():
    assert sorted(p.name for p in UNITS.iterdir()) == sorted((*SERVICES, "mediahook.target"))
    target = unit("mediahook.target")
    assert one(target["Install"], "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("name", SERVICES)
def test_service_units_run_as_the_service_user_with_secrets_from_a_file(name):
    u = unit(name)
    service = u["Service"]
    assert one(service, "User") == one(service, "Group") == "mediahook"
    assert one(service, "EnvironmentFile") == "/etc/mediahook/mediahook.env"
    env = dict(v.split("=", 1) for v in service.get("Environment", []))
    assert env["MEDIAHOOK_CONFIG"] == "/etc/mediahook/mediahook.toml"
    assert one(service, "Restart") == "always" and float(one(service, "RestartSec")) > 0
    assert one(service, "KillSignal") == "SIGTERM" and one(service, "KillMode") == "mixed"
    assert one(service, "StateDirectory") == "mediahook"
    assert one(u["Unit"], "PartOf") == one(u["Install"], "WantedBy") == "mediahook.target"
    assert int(one(u["Unit"], "StartLimitBurst")) > 1


def exec_start(name: str) -> list[str]:
    return shlex.split(one(unit(name)["Service"], "ExecStart"))


def test_exec_start_commands_exist():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}

    web = exec_start("mediahook-web.service")
    assert web[0] == INSTALL_BIN + "gunicorn" and "gunicorn" in scripts
    conf = web[web.index("-c") + 1]
    assert conf.startswith(INSTALL_SRC) and (ROOT / conf[len(INSTALL_SRC):]).is_file()
    module, _, call = web[-1].partition(":")
    assert callable(getattr(importlib.import_module(module), call.removesuffix("()")))

    worker = exec_start("mediahook-worker@.service")
    assert worker[0] == INSTALL_BIN + "mediahook" and scripts["mediahook"] == "app.cli.main:main"
    assert worker[1] in cli_main.commands
    cli_main.commands[worker[1]].make_context(worker[1], worker[2:])  # its options parse


def test_web_unit_stops_after_gunicorns_graceful_timeout():
    conf = (DEPLOY / "gunicorn.conf.py").read_text()  # not imported: it sets process environment
    graceful = int(re.search(r"^graceful_timeout\s*=\s*(\d+)", conf, re.M).group(1))
    service = unit("mediahook-web.service")["Service"]
    assert int(one(service, "TimeoutStopSec")) > graceful
    assert one(service, "Type") == "notify"  # gunicorn sends READY=1


def test_worker_unit_lets_the_longest_job_finish_on_stop():
    """RQ's warm shutdown waits for the running job: systemd must wait longer than any job may run."""
    longest = max(load({}).job_timeout_seconds, inspect.signature(actions.enqueue).parameters["timeout"].default)
    assert int(one(unit("mediahook-worker@.service")["Service"], "TimeoutStopSec")) > longest


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    """systemd's own parser: no unknown keys, bad values or missing programs (pointed at this venv)."""
    for path in UNITS.iterdir():
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALL_BIN, str(Path(sys.executable).parent) + "/"))
    names = [str(tmp_path / p.name) for p in UNITS.iterdir()]
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if str(tmp_path) in line or "mediahook" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


# --- nginx -----------------------------------------------------------------------------------

Directive = tuple[str, list[str], list | None]


def nginx_config(text: str) -> list[Directive]:
    """Just enough of nginx's syntax: directives, their arguments and blocks."""
    text = "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};'\"]+", text)

    def block(i: int) -> tuple[list[Directive], int]:
        out: list[Directive] = []
        words: list[str] = []
        while i < len(tokens):
            token, i = tokens[i], i + 1
            if token == ";":
                out.append((words[0], words[1:], None))
                words = []
            elif token == "{":
                children, i = block(i)
                out.append((words[0], words[1:], children))
                words = []
            elif token == "}":
                return out, i
            else:
                words.append(token[1:-1] if token[0] in "'\"" else token)
        assert not words, words
        return out, i

    return block(0)[0]


def find(block: list[Directive], name: str) -> list[Directive]:
    return [d for d in block if d[0] == name]


def values(block: list[Directive], name: str) -> list[list[str]]:
    return [args for _, args, _ in find(block, name)]


def size(value: str) -> int:
    number, unit_ = re.fullmatch(r"(\d+)([kKmM]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit_.lower()]


def servers() -> dict[str, list[Directive]]:
    """The server blocks by role: "public" (TLS callback host), "redirect", "internal", "default"."""
    out = {}
    for _, _, body in find(nginx_config(NGINX.read_text()), "server"):
        listens = " ".join(" ".join(a) for a in values(body, "listen"))
        names = [n for args in values(body, "server_name") for n in args]
        if "default_server" in listens:
            out["default"] = body
        elif PUBLIC_HOST in names:
            out["public" if "ssl" in listens else "redirect"] = body
        else:
            out["internal"] = body
    assert sorted(out) == ["default", "internal", "public", "redirect"], sorted(out)
    return out


def proxied(server: list[Directive]) -> set[str]:
    return {" ".join(args) for _, args, body in find(server, "location") if body and find(body, "proxy_pass")}


def test_nginx_public_host_serves_only_callbacks_and_healthz():
    public = servers()["public"]
    assert proxied(public) == {"/hooks/", "= /healthz"}
    [catch_all] = [body for _, args, body in find(public, "location") if args == ["/"]]
    assert values(catch_all, "return")[0][0] == "404"
    assert values(public, "ssl_certificate") and values(public, "ssl_certificate_key")
    assert "TLSv1" not in values(public, "ssl_protocols")[0] and "TLSv1.1" not in values(public, "ssl_protocols")[0]


def test_nginx_body_limit_is_max_body_bytes():
    default = load({}).max_body_bytes
    for role, server in servers().items():
        for (limit,) in values(server, "client_max_body_size"):
            assert size(limit) == default, role
    assert values(servers()["public"], "client_max_body_size")


def test_nginx_forwards_what_the_app_trusts_and_passes_to_gunicorns_bind():
    http = nginx_config(NGINX.read_text())
    [(_, _, upstream)] = find(http, "upstream")
    env = dict(v.split("=", 1) for v in unit("mediahook-web.service")["Service"]["Environment"])
    assert values(upstream, "server") == [[env["MEDIAHOOK_BIND"]]]
    for role in ("public", "internal"):
        headers = {args[0]: args[1] for args in values(servers()[role], "proxy_set_header")}
        assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for", role
        assert headers["X-Forwarded-Proto"] == "$scheme" and headers["X-Forwarded-Host"] == "$http_host", role
    # gunicorn sees nginx's loopback address: the config in docs/operations.md must trust it.
    host = env["MEDIAHOOK_BIND"].rsplit(":", 1)[0]
    assert host == "127.0.0.1" and host in operations_config()["web"]["trusted_proxies"]


def test_nginx_keeps_secrets_out_of_its_logs():
    for _, args, _ in find(nginx_config(NGINX.read_text()), "log_format"):
        fmt = " ".join(args[1:])
        assert not re.search(r"\$(request|request_uri|args|query_string|arg_\w+)\b", fmt), fmt
    for role, server in servers().items():
        for args in values(server, "access_log"):
            assert args == ["off"] or args[1:] == ["mediahook_safe"], role


def test_nginx_internal_host_is_allow_listed():
    internal = servers()["internal"]
    assert values(internal, "deny") == [["all"]] and values(internal, "allow")
    assert all(not a[0].startswith(("0.0.0.0", "*", "[::]")) and ":" in a[0] for a in values(internal, "listen"))


# --- configs and docs ------------------------------------------------------------------------

def operations_config() -> dict:
    """The TOML config docs/operations.md tells people to write (its first ```toml block)."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(), re.S)
    assert blocks, "docs/operations.md has no ```toml block"
    return tomllib.loads(blocks[0])


def test_operations_config_loads_with_the_secrets_from_the_environment():
    settings = build(operations_config(), env=SECRETS)
    assert settings.metastudio_source and settings.cdnetworks_source
    assert settings.admin_token == SECRETS["MEDIAHOOK_ADMIN_TOKEN"]
    assert settings.spool_dir.startswith("/var/lib/mediahook/")  # the units' StateDirectory


def test_example_config_documents_the_operations_sections():
    example = DEPLOY / "mediahook.example.toml"
    settings = load({"MEDIAHOOK_CONFIG": str(example), **SECRETS})
    assert settings.admin_token == SECRETS["MEDIAHOOK_ADMIN_TOKEN"]
    text = example.read_text()
    for key in ("[admin]", "token", "MEDIAHOOK_ADMIN_TOKEN", "[web]", "trusted_proxies", "[logging]", "format",
                "level", "redis+sentinel://", "<service_name>"):
        assert key in text, key


def test_sentinel_example_and_its_url_agree():
    conf = (DEPLOY / "sentinel.conf").read_text()
    [service] = re.findall(r"^sentinel monitor (\S+) ", conf, re.M)
    [url] = re.findall(r"redis\+sentinel://\S+", conf)
    parsed = parse_sentinel_url(url)
    assert parsed.service_name == service and len(parsed.sentinels) == 3
    assert build({}, env={"REDIS_URL": url, **SECRETS}).redis_url == url


def test_redis_conf_keeps_every_acknowledged_write():
    directives = {}
    for line in (DEPLOY / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            directives[key] = value
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["appendonly"] == "yes" and directives["appendfsync"] in ("everysec", "always")


# --- nginx itself, in front of a real gunicorn -------------------------------------------------

def _runnable_nginx_config(tmp_path: Path, upstream: str) -> tuple[Path, dict[str, int]]:
    """deploy/nginx/mediahook.conf with its ports, paths and certificate made local to tmp_path."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    f"/CN={PUBLIC_HOST}", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    ports = {"http": free_port(), "https": free_port(), "internal": free_port()}
    text = NGINX.read_text()
    text = re.sub(r"^\s*listen \[::\].*$", "", text, flags=re.M)  # the sandbox may lack IPv6
    text = re.sub(r"listen 80\b", f"listen 127.0.0.1:{ports['http']}", text)
    text = re.sub(r"listen 443\b", f"listen 127.0.0.1:{ports['https']}", text)
    text = re.sub(r"listen 10\.0\.0\.5:8443\b", f"listen 127.0.0.1:{ports['internal']}", text)
    text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp_path}/cert.pem;", text)
    text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp_path}/key.pem;", text)
    text = text.replace("/var/log/nginx/", f"{tmp_path}/").replace("/var/www/letsencrypt", str(tmp_path))
    text = text.replace("server 127.0.0.1:8000;", f"server {upstream};")
    (tmp_path / "mediahook.conf").write_text(text)
    main = tmp_path / "nginx.conf"
    main.write_text(f"""daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/mediahook.conf;
}}
""")
    return main, ports


VENDOR_ADDR = "127.0.0.2"  # a loopback address that is not a trusted proxy: the "vendor"


def _https(port: int, method: str, path: str, body: bytes = b"", host: str = PUBLIC_HOST,
           headers: dict | None = None, source: str = VENDOR_ADDR) -> tuple[int, bytes]:
    """One HTTPS request from ``source`` to 127.0.0.1:port with SNI and Host set to ``host``."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    conn.sock = context.wrap_socket(sock, server_hostname=host)
    conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


needs_nginx = pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("openssl")),
                                 reason="nginx or openssl is not installed")


@needs_nginx
def test_nginx_accepts_the_site(tmp_path):
    main, _ = _runnable_nginx_config(tmp_path, "127.0.0.1:9")
    out = subprocess.run(["nginx", "-t", "-c", str(main), "-e", str(tmp_path / "error.log")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _can_bind(address: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
        return True
    except OSError:  # only 127.0.0.1 on some systems (macOS)
        return False


@needs_nginx
@pytest.mark.slow
@pytest.mark.skipif(not _can_bind(VENDOR_ADDR), reason=f"cannot send from {VENDOR_ADDR}")
def test_through_nginx(tmp_path, gunicorn_server, redis_client):
    """Vendor → nginx (TLS) → gunicorn, with [web] trusted_proxies as docs/operations.md sets it."""
    base = gunicorn_server(web=operations_config()["web"], public_base_url=f"https://{PUBLIC_HOST}")
    main, ports = _runnable_nginx_config(tmp_path, base[len("http://"):])
    nginx = subprocess.Popen(["nginx", "-c", str(main), "-e", str(tmp_path / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            assert nginx.poll() is None, (tmp_path / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", ports["https"]), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, what="nginx to listen")
        body = live_event("SHOOT_SCRIPT_SWITCH", room_id="r", job_id="j", shoot_script_sequence_no=1)
        status, answer = _https(ports["https"], "POST", signed_path(host=PUBLIC_HOST), body,
                                headers={"X-Forwarded-For": "6.6.6.6"})
        assert status == 200, answer
        event_id = json.loads(answer)["event_id"]
        # The forged entry is skipped: the client is the address nginx saw.
        assert redis_client.hget(f"mh:event:{event_id}", "remote_addr") == VENDOR_ADDR.encode()
        assert _https(ports["https"], "GET", "/healthz")[0] == 200
        for path in ("/api/events", "/metrics", "/readyz", "/rq"):
            assert _https(ports["https"], "GET", path) == (404, b'{"code":404,"message":"not found"}'), path
        too_big = b"x" * (load({}).max_body_bytes + 1)
        status, answer = _https(ports["https"], "POST", signed_path(host=PUBLIC_HOST), too_big)
        assert (status, json.loads(answer)["code"]) == (413, 413)
        internal = {"host": "mediahook-admin.internal"}
        assert _https(ports["internal"], "GET", "/readyz", **internal)[0] == 403  # not on the allow-list
        assert _https(ports["internal"], "GET", "/readyz", source="127.0.0.1", **internal)[0] == 200
        with pytest.raises(ssl.SSLError):  # a name that is not ours: no certificate, no answer
            _https(ports["https"], "GET", "/", host="unknown.example.com")
    finally:
        nginx.terminate()
        nginx.wait(10)
    assert os.path.exists(tmp_path / "mediahook.access.log")
    assert "hwSecret" not in (tmp_path / "mediahook.access.log").read_text()
