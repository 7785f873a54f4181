"""test_deploy_lint: yamllint on every YAML file, shellcheck on every shell script, systemd-analyze
on the unit, each shipped nodexd config accepted by --check-config (container configs with a TLS
certificate made at test time), the container files wired for TLS and a token (Dockerfiles:
hadolint is not packaged in Debian 12, so they are only checked for the scripts they must call)."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

import nodex_harness as nx
import tls_pki

REPO = nx.REPO_DIR
SKIP_DIRS = {".git", "__pycache__", "node_modules"}


def repo_files(pred):
    found = []
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        dirs[:] = sorted(d for d in dirs
                         if d not in SKIP_DIRS and not (rel_root == "." and d.startswith("build")))
        for f in sorted(files):
            path = os.path.join(root, f)
            if pred(os.path.relpath(path, REPO)):
                found.append(path)
    return found


def is_yaml(rel):
    return rel.endswith((".yaml", ".yml")) or rel in (".yamllint", ".clang-format", ".clang-tidy")


def is_shell(rel):
    if rel.endswith(".sh") and (rel.startswith(("scripts/", "deploy/")) or "/" not in rel):
        return True
    return rel == ".ci/run"


def run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=REPO, **kw)


def require(tool):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (scripts/deps.sh installs it)")


def test_yamllint():
    require("yamllint")
    files = repo_files(is_yaml)
    assert any(f.endswith("deploy/compose.yaml") for f in files), files
    assert any("/deploy/k8s/" in f for f in files), files
    r = run(["yamllint", "-c", os.path.join(REPO, ".yamllint"), "-f", "parsable", *files])
    assert r.returncode == 0, f"yamllint:\n{r.stdout}"


def test_shellcheck():
    require("shellcheck")
    files = repo_files(is_shell)
    rels = {os.path.relpath(f, REPO) for f in files}
    assert {"scripts/deps.sh", "deploy/smoke.sh", "deploy/docker/build.sh", ".ci/run"} <= rels
    r = run(["shellcheck", "--format=gcc", *files])
    assert r.returncode == 0, f"shellcheck:\n{r.stdout}"


def test_scripts_executable():
    for f in repo_files(is_shell):
        assert os.access(f, os.X_OK), f"{f} is not executable"


def test_systemd_unit_verifies(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    with open(os.path.join(REPO, "deploy/systemd/nodexd.service")) as f:
        unit = f.read()
    assert re.search(r"^Type=notify$", unit, re.M)
    assert re.search(r"^KillMode=mixed$", unit, re.M)
    # Point ExecStart at the build tree's nodexd so the executable check has something to find.
    path = tmp_path / "nodexd.service"
    path.write_text(unit.replace("/usr/local/bin/", nx.BUILD_DIR + "/"))
    r = run(["systemd-analyze", "verify", str(path)])
    assert r.returncode == 0 and not r.stdout.strip(), f"systemd-analyze verify:\n{r.stdout}"


CONTAINER_CONFIGS = ("deploy/docker/nodexd.yaml", "deploy/k8s/nodexd.yaml")
TLS_CERT = "/run/secrets/nodex_tls.crt"
TLS_KEY = "/run/secrets/nodex_tls.key"


def load_yaml(rel):
    with open(os.path.join(REPO, rel)) as f:
        return yaml.safe_load(f)


def test_shipped_configs_are_valid(tmp_path):
    """--check-config on each shipped config, with ${VAR} expanded as the entrypoint does; the
    container configs' TLS files (/run/secrets/nodex_tls.*) point at a certificate made here."""
    ca = tls_pki.Pki(str(tmp_path / "pki"), "Deploy Lint CA")
    cert, key, _ = ca.issue("nodexd", "/CN=nodexd", sans=("DNS:nodexd", "DNS:localhost"))
    env = dict(os.environ, NODEX_NODE_NAME="nodexd@nodexd-0.nodexd-dist.default.svc.cluster.local")
    entry = os.path.join(REPO, "deploy/docker/entrypoint.sh")
    for rel in ("deploy/nodexd.yaml", *CONTAINER_CONFIGS):
        with open(os.path.join(REPO, rel)) as f:
            text = f.read()
        if rel in CONTAINER_CONFIGS:
            assert text.count(TLS_CERT) == 2 and text.count(TLS_KEY) == 2, rel
            text = text.replace(TLS_CERT, cert).replace(TLS_KEY, key)
        config = tmp_path / rel.replace("/", "_")
        config.write_text(text)
        r = subprocess.run([entry, "check"], env=dict(env, NODEX_CONFIG=str(config),
                                                      NODEX_RUNTIME_DIR=str(tmp_path),
                                                      PATH=nx.BUILD_DIR + ":" + env["PATH"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert r.returncode == 0 and "config OK" in r.stdout, f"{rel}: {r.stdout}"
    # An unset variable is an error, not an empty node name.
    env = {k: v for k, v in os.environ.items() if k != "NODEX_NODE_NAME"}
    env.update(NODEX_CONFIG=os.path.join(REPO, "deploy/k8s/nodexd.yaml"),
               NODEX_RUNTIME_DIR=str(tmp_path))
    r = subprocess.run([entry, "check"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode != 0 and "${NODEX_NODE_NAME} is not set" in r.stdout, r.stdout


def test_dockerfile_runs_the_ci_scripts():
    with open(os.path.join(REPO, "deploy/docker/Dockerfile")) as f:
        text = f.read()
    runs = " ".join(re.findall(r"^RUN ((?:.*\\\n)*.*)", text, re.M))
    for script in ("scripts/deps.sh", "deploy/docker/build.sh", "runtime-deps.sh"):
        assert script in runs, f"Dockerfile RUN steps do not call {script}"
    assert re.search(r'^ENTRYPOINT \["tini", "--"', text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text and "EXPOSE 8080 50051 4369 9100" in text
    assert "erlang_cookie" not in text.replace("/run/secrets/erlang_cookie", "")


def test_container_configs_serve_tls_with_a_token():
    """Both listeners of each container config speak TLS with the mounted certificate, and a
    token principal guards them."""
    for rel in CONTAINER_CONFIGS:
        config = load_yaml(rel)
        for listener in ("http", "grpc"):
            tls = config[listener].get("tls") or {}
            assert tls.get("cert_file") == TLS_CERT and tls.get("key_file") == TLS_KEY, \
                f"{rel}: {listener}.tls = {tls}"
        principals = config["auth"]["principals"]
        assert [p["token_file"] for p in principals] == ["/run/secrets/nodex_token"], rel


def test_compose_mounts_the_tls_secrets_and_smoke_speaks_https():
    compose = load_yaml("deploy/compose.yaml")
    services = compose["services"]
    assert {"erlang_cookie", "nodex_token", "nodex_tls.crt", "nodex_tls.key"} <= \
        set(services["nodexd"]["secrets"])
    assert compose["secrets"]["nodex_tls.crt"]["file"] == "./secrets/nodex_tls.crt"
    assert compose["secrets"]["nodex_tls.key"]["file"] == "./secrets/nodex_tls.key"
    smoke = services["smoke"]
    assert smoke["environment"]["NODEX_URL"].startswith("https://")
    assert smoke["environment"]["NODEX_CA_FILE"] == TLS_CERT
    assert "nodex_tls.crt" in smoke["secrets"] and "nodex_tls.key" not in smoke["secrets"]
    with open(os.path.join(REPO, "deploy/docker/Dockerfile")) as f:
        assert "NODEX_HEALTH_SCHEME=https" in f.read()


def test_k8s_mounts_the_tls_secret_and_probes_https():
    kustomization = load_yaml("deploy/k8s/kustomization.yaml")
    tls = [g for g in kustomization["secretGenerator"] if g["name"] == "nodex-tls"]
    assert tls and tls[0]["type"] == "kubernetes.io/tls", kustomization["secretGenerator"]
    assert sorted(tls[0]["files"]) == ["tls.crt=nodex_tls.crt", "tls.key=nodex_tls.key"]
    pod = load_yaml("deploy/k8s/statefulset.yaml")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["tls-secret"]["secret"]
    assert secret["secretName"] == "nodex-tls"
    assert {i["key"]: i["path"] for i in secret["items"]} == \
        {"tls.crt": "nodex_tls.crt", "tls.key": "nodex_tls.key"}
    # the init container copies both files where the config names them, owned by nodexd's uid
    init = pod["initContainers"][0]
    assert init["command"][:8] == ["install", "-m", "0400", "-o", "10001", "-g", "10001", "-t"]
    assert init["command"][8] == os.path.dirname(TLS_CERT)
    assert {"/var/run/tls-secret/nodex_tls.crt", "/var/run/tls-secret/nodex_tls.key"} <= \
        set(init["command"][9:])
    assert any(m["name"] == "tls-secret" for m in init["volumeMounts"])
    (container,) = pod["containers"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["scheme"] == "HTTPS" and get["path"] == path, get
        assert get["port"] in {p["name"] for p in container["ports"]}
    assert "httpHeaders" not in container["readinessProbe"]["httpGet"]  # probes carry no token


def test_trial_certificate_is_accepted(tmp_path):
    """deploy/docker/trial-cert.sh (installed as nodexd-trial-cert) makes a pair --check-config
    accepts, naming nodexd, localhost, 127.0.0.1 and the extra names; the key is private."""
    out = tmp_path / "secrets"
    r = run([os.path.join(REPO, "deploy/docker/trial-cert.sh"), str(out), "nodexd.prod.svc",
             "10.1.2.3"])
    assert r.returncode == 0, r.stdout
    cert, key = out / "nodex_tls.crt", out / "nodex_tls.key"
    assert os.stat(key).st_mode & 0o077 == 0
    text = run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"]).stdout
    for name in ("DNS:nodexd", "DNS:localhost", "IP Address:127.0.0.1", "DNS:nodexd.prod.svc",
                 "IP Address:10.1.2.3"):
        assert name in text, text
    config = tmp_path / "c.yaml"
    config.write_text('node:\n  name: "x@127.0.0.1"\nhttp:\n  listen: "127.0.0.1:0"\n  tls:\n'
                      f'    cert_file: "{cert}"\n    key_file: "{key}"\n')
    r = run([nx.NODEXD, "--check-config", str(config)])
    assert r.returncode == 0 and "config OK" in r.stdout, r.stdout
