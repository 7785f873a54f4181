"""test_deploy_lint: yamllint on every YAML file, shellcheck on every shell script, systemd-analyze
on the unit, and each shipped nodexd config accepted by --check-config (Dockerfiles: hadolint is
not packaged in Debian 12, so they are only checked for the scripts they must call)."""

import os
import re
import shutil
import subprocess

import pytest

import nodex_harness as nx

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


def test_shipped_configs_are_valid(tmp_path):
    """--check-config on each shipped config, with ${VAR} expanded as the entrypoint does."""
    env = dict(os.environ, NODEX_NODE_NAME="nodexd@nodexd-0.nodexd-dist.default.svc.cluster.local")
    entry = os.path.join(REPO, "deploy/docker/entrypoint.sh")
    for rel in ("deploy/nodexd.yaml", "deploy/docker/nodexd.yaml", "deploy/k8s/nodexd.yaml"):
        r = subprocess.run([entry, "check"], env=dict(env, NODEX_CONFIG=os.path.join(REPO, rel),
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
