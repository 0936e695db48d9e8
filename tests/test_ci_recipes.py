"""The CI recipes of examples/ci/ work: their shell steps, run as the runner would run them.

Not the hosted runners: the `run:` steps of the GitHub workflow and the `script:` lines of
the GitLab job are taken from the files and run with bash, in a repository laid out as
the README says, against two real dev servers (two targets). The forge's API is a
local HTTP server that keeps comments and serves the plan artifact, recording every
request: what the recipes post is checked there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from reconciler.demo.devserver import DevServer
from tests.declarative_server import DeclarativeServer
from tests.helpers import SLACK
from tests.test_review import parse

RECIPES = Path(__file__).parent.parent / "examples" / "ci"
TARGETS = ("prod-eu", "staging")  # the names the recipes' variables are written for
PROJECT = "acme/infra"
NUMBER = "7"
HEAD = "0123abcd"


# --- a forge that keeps what it is sent ------------------------------------------------------


@dataclass
class Forge:
    """GitHub's and GitLab's comment/note and artifact endpoints, kept in memory."""

    artifact: bytes = b""
    comments: dict[int, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    address: str = ""

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        route = path.split("?", 1)[0]
        listing = {
            f"/repos/{PROJECT}/issues/{NUMBER}/comments",
            f"/projects/42/merge_requests/{NUMBER}/notes",
        }
        if route in listing and method == "GET":
            page = int(dict(p.split("=") for p in path.split("?", 1)[1].split("&"))["page"])
            items = [{"id": i, "body": b} for i, b in sorted(self.comments.items())]
            return 200, items if page == 1 else [], {}
        if route in listing and method == "POST":
            identifier = 100 + len(self.comments)
            self.comments[identifier] = body["body"]
            return 201, {"id": identifier}, {}
        identifier = route.rsplit("/", 1)[-1]
        if method in ("PATCH", "PUT") and identifier.isdigit():
            self.comments[int(identifier)] = body["body"]
            return 200, {"id": int(identifier)}, {}
        routes: dict[str, Any] = {
            f"/repos/{PROJECT}/actions/runs": {"workflow_runs": [{"id": 99}]},
            f"/repos/{PROJECT}/actions/runs/99/artifacts": {
                "artifacts": [
                    {"name": "other", "archive_download_url": "/nowhere"},
                    {"name": "plans", "archive_download_url": f"{self.address}/download/99"},
                ]
            },
            f"/projects/42/repository/commits/{HEAD}/merge_requests": [{"iid": int(NUMBER)}],
            f"/projects/42/merge_requests/{NUMBER}/pipelines": [{"id": 5}],
            "/projects/42/pipelines/5/jobs": [{"id": 11, "name": "plan"}],
        }
        if route in routes:
            return 200, routes[route], {}
        if route == "/download/99":  # GitHub redirects to pre-signed storage
            return 302, None, {"Location": f"{self.address}/storage/99.zip"}
        if route in ("/storage/99.zip", "/projects/42/jobs/11/artifacts"):
            return 200, self.artifact, {}
        return 404, {"message": f"no route {method} {route}"}, {}


@pytest.fixture
def forge() -> Iterator[Forge]:
    state = Forge()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.requests.append((self.command, self.path, dict(self.headers.items())))
            status, body, headers = state.answer(
                self.command, self.path, json.loads(raw) if raw else None
            )
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PATCH = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.address = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- a repository as the README lays it out ---------------------------------------------------


@dataclass
class Repository:
    root: Path
    env: dict[str, str]

    def run(self, script: str, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """One step's shell text, as a runner runs it: bash, exiting at the first failure."""
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            check=False,
            cwd=self.root,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=5 * SLACK,
        )

    def fresh_checkout(self) -> None:
        """What the merge job checks out: the files, none of the plan job's output."""
        shutil.rmtree(self.root / "plans", ignore_errors=True)


def _desired(mount: str) -> str:
    return f"version: 1\nsecrets:\n  - {{path: {mount}/, plugin: kv}}\n"


@pytest.fixture
def repository(
    server: DevServer, declarative_server: DeclarativeServer, forge: Forge, tmp_path: Path
) -> Repository:
    root = tmp_path / "repo"
    (root / "clusters").mkdir(parents=True)
    (root / "clusters" / "prod-eu.yaml").write_text(_desired("ci-prod"))
    (root / "clusters" / "staging.yaml").write_text(_desired("ci-staging"))
    (root / "targets.yaml").write_text(
        "targets:\n"
        f"  prod-eu: {{address: '{server.address}'}}\n"
        f"  staging: {{address: '{declarative_server.address}'}}\n"
    )
    shutil.copytree(RECIPES, root / "ci", ignore=shutil.ignore_patterns("__pycache__"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_", "CI"))}
    env = {
        **clean,
        # `pip install reconciler` is skipped: the checkout's own is on the PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RECONCILER_LOCK_DIR": str(tmp_path),
        # What the recipes' secret and variable expressions give, per target.
        "BAO_TOKEN_PROD_EU": server.token,
        "BAO_TOKEN_STAGING": declarative_server.token,
    }
    return Repository(root, env)


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if "run" in s and not s["run"].startswith("pip install")]


def _mounts(address: str, token: str) -> set[str]:
    data = httpx.get(f"{address}/v1/sys/mounts", headers={"X-Vault-Token": token}).json()["data"]
    return {path for path in data if path.startswith("ci-")}


def _zip(directory: Path, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.iterdir()):
            archive.write(path, prefix + path.name)
    return buffer.getvalue()


def _check_comments(forge: Forge, repository: Repository) -> None:
    assert len(forge.comments) == 2
    for name in TARGETS:
        (body,) = [b for b in forge.comments.values() if f"<!-- reconciler-plan: {name} -->" in b]
        document = parse(body)
        assert ("h2", "Reconciler plan") in document.headings()
        assert f"secrets/ci-{'prod' if name == 'prod-eu' else 'staging'}/" in body
        assert f"clusters/{name}.yaml" in body


def test_the_github_workflow_plans_comments_and_applies_the_reviewed_plans(
    repository: Repository,
    forge: Forge,
    server: DevServer,
    declarative_server: DeclarativeServer,
    tmp_path: Path,
) -> None:
    workflow = YAML(typ="safe").load((RECIPES / "github-actions.yml").read_text())
    github = {
        "GITHUB_API_URL": forge.address,
        "GITHUB_REPOSITORY": PROJECT,
        "GITHUB_TOKEN": "gh-test-token",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "PR_NUMBER": NUMBER,
        "HEAD_SHA": HEAD,
    }
    plan_steps = _steps(workflow["jobs"]["plan"])
    assert [s["name"] for s in plan_steps] == [
        "Plan every target",
        "One comment per target, updated on every push",
    ]
    for step in plan_steps:
        done = repository.run(step["run"], github)
        assert done.returncode == 0, (step["name"], done.stdout, done.stderr)
    # Commented again (a second push): each target's comment is updated, never doubled.
    again = repository.run(plan_steps[-1]["run"], github)
    assert again.returncode == 0, (again.stdout, again.stderr)
    _check_comments(forge, repository)
    writes = [(m, p) for m, p, _ in forge.requests if m != "GET"]
    assert sorted(m for m, _ in writes) == ["PATCH", "PATCH", "POST", "POST"]
    assert all(h.get("Authorization") == "Bearer gh-test-token" for _, _, h in forge.requests)
    assert "Reconciler plan" in (tmp_path / "summary.md").read_text()
    assert _mounts(server.address, server.token) == set()  # planning wrote nothing

    # upload-artifact keeps the folder's contents; the merge job starts from a checkout.
    forge.artifact = _zip(repository.root / "plans", "")
    repository.fresh_checkout()
    for step in _steps(workflow["jobs"]["apply"]):
        done = repository.run(step["run"], github)
        assert done.returncode == 0, (step["name"], done.stdout, done.stderr)
    storage = [h for m, p, h in forge.requests if p.startswith("/storage/")]
    assert storage and "Authorization" not in storage[0]  # the token stays with GitHub
    assert _mounts(server.address, server.token) == {"ci-prod/"}
    assert _mounts(declarative_server.address, declarative_server.token) == {"ci-staging/"}
    for name in TARGETS:
        result = json.loads((repository.root / "plans" / f"{name}.result.json").read_text())
        assert result["verdict"] == "converged", result


def test_the_gitlab_pipeline_plans_comments_and_applies_the_reviewed_plans(
    repository: Repository,
    forge: Forge,
    server: DevServer,
    declarative_server: DeclarativeServer,
) -> None:
    pipeline = YAML(typ="safe").load((RECIPES / "gitlab-ci.yml").read_text())
    gitlab = {
        "CI_API_V4_URL": forge.address,
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": NUMBER,
        "CI_COMMIT_SHA": HEAD,
        "GITLAB_TOKEN": "gl-test-token",
    }
    script = pipeline["plan"]["script"]
    done = repository.run("\n".join(script), gitlab)
    assert done.returncode == 0, (done.stdout, done.stderr)
    # Commented again (a second push): each target's note is updated, never doubled.
    (comment,) = [line for line in script if "forge.py comment" in line]
    again = repository.run(comment, gitlab)
    assert again.returncode == 0, (again.stdout, again.stderr)
    _check_comments(forge, repository)
    writes = sorted(m for m, _, _ in forge.requests if m != "GET")
    assert writes == ["POST", "POST", "PUT", "PUT"]
    assert all(h.get("Private-Token") == "gl-test-token" for _, _, h in forge.requests)

    # GitLab keeps an artifact's paths.
    forge.artifact = _zip(repository.root / "plans", "plans/")
    repository.fresh_checkout()
    done = repository.run("\n".join(pipeline["apply"]["script"]), gitlab)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert _mounts(server.address, server.token) == {"ci-prod/"}
    assert _mounts(declarative_server.address, declarative_server.token) == {"ci-staging/"}


def test_a_target_that_cannot_be_planned_is_said_in_its_comment_and_fails_the_job(
    repository: Repository, forge: Forge
) -> None:
    (repository.root / "clusters" / "staging.yaml").write_text(
        "version: 1\nsecrets: [{path: x/}]\n"
    )
    done = repository.run("ci/plan-all.sh", {})
    assert done.returncode == 1
    staging = (repository.root / "plans" / "staging.md").read_text()
    assert "not planned" in staging and "staging.yaml:2" in staging
    assert "Reconciler plan" in (repository.root / "plans" / "prod-eu.md").read_text()
