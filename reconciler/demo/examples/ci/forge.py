#!/usr/bin/env python3
"""The two calls CI makes to the code forge, GitHub or GitLab (Python's standard library only).

    forge.py comment github|gitlab --project P --number N PLANS_DIR
        One comment per target on the pull (merge) request: the Markdown plan of
        PLANS_DIR/NAME.md behind a hidden marker naming NAME. A comment with that marker
        is updated; otherwise one is created. Re-runs never pile up comments.

    forge.py fetch-plans github|gitlab --project P --commit SHA PLANS_DIR
        The plans reviewed for commit SHA (the pull request's head on GitHub, the merge
        commit on GitLab): the `plans` artifact of the last successful plan run, unpacked
        into PLANS_DIR, for apply-all.sh.

GitHub: --project OWNER/REPO, token $GITHUB_TOKEN, API $GITHUB_API_URL
(https://api.github.com). GitLab: --project the numeric id, token $GITLAB_TOKEN (a project
access token with the `api` scope), API $CI_API_V4_URL.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

MARKER = "<!-- reconciler-plan: {name} -->"
ARTIFACT = "plans"  # the artifact name (GitHub) / the plan job's name (GitLab)
WORKFLOW_JOB = "plan"


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # raise the redirect as an HTTPError: the caller follows it


_NO_REDIRECTS = urllib.request.build_opener(_KeepRedirects)


class Forge:
    def __init__(self, api: str, headers: dict[str, str]) -> None:
        self.api = api.rstrip("/")
        self.headers = headers

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the forge's API URL
            self.api + path,
            data=data,
            method=method,
            headers={**self.headers, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            raw = answer.read()
        return json.loads(raw) if raw else None

    def download(self, path_or_url: str) -> bytes:
        """An archive; a redirect (GitHub's pre-signed storage URL) is followed without
        the token, which the storage does not need and must not see."""
        url = path_or_url if "://" in path_or_url else self.api + path_or_url
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310
        try:
            with _NO_REDIRECTS.open(request, timeout=300) as answer:
                return bytes(answer.read())
        except urllib.error.HTTPError as error:
            if error.code not in (301, 302, 303, 307, 308):
                raise
            location = error.headers["Location"]
        with urllib.request.urlopen(location, timeout=300) as answer:  # noqa: S310
            return bytes(answer.read())

    def pages(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        items: list[dict[str, Any]] = []
        page = 1
        separator = "&" if "?" in path else "?"
        while True:
            batch = self.call("GET", f"{path}{separator}per_page=100&page={page}")
            items += batch
            if len(batch) < 100:
                return items
            page += 1


def github() -> Forge:
    return Forge(
        os.environ.get("GITHUB_API_URL", "https://api.github.com"),
        {
            "Authorization": f"Bearer {os.environ['GITHUB_TOKEN']}",
            "Accept": "application/vnd.github+json",
        },
    )


def gitlab() -> Forge:
    return Forge(os.environ["CI_API_V4_URL"], {"PRIVATE-TOKEN": os.environ["GITLAB_TOKEN"]})


def comment(kind: str, project: str, number: str, plans: Path) -> None:
    documents = sorted(plans.glob("*.md"))
    if not documents:
        sys.exit(f"no plan documents in {plans}/")
    if kind == "github":
        forge = github()
        listing = f"/repos/{project}/issues/{number}/comments"
        existing = forge.pages(listing)
    else:
        forge = gitlab()
        listing = f"/projects/{urllib.parse.quote(project, safe='')}/merge_requests/{number}/notes"
        existing = forge.pages(listing)
    for document in documents:
        marker = MARKER.format(name=document.stem)
        body = f"{marker}\n{document.read_text(encoding='utf-8')}"
        mine = [c for c in existing if marker in (c.get("body") or "")]
        if not mine:
            forge.call("POST", listing, {"body": body})
            print(f"{document.stem}: comment created")
        elif kind == "github":
            forge.call("PATCH", f"/repos/{project}/issues/comments/{mine[0]['id']}", {"body": body})
            print(f"{document.stem}: comment {mine[0]['id']} updated")
        else:
            forge.call("PUT", f"{listing}/{mine[0]['id']}", {"body": body})
            print(f"{document.stem}: note {mine[0]['id']} updated")


def fetch_plans(kind: str, project: str, commit: str, plans: Path) -> None:
    if kind == "github":
        forge = github()
        runs = forge.call(
            "GET",
            f"/repos/{project}/actions/runs?head_sha={commit}&event=pull_request&status=success",
        )["workflow_runs"]
        for run in runs:
            artifacts = forge.call("GET", f"/repos/{project}/actions/runs/{run['id']}/artifacts")
            found = [a for a in artifacts["artifacts"] if a["name"] == ARTIFACT]
            if found:
                archive = forge.download(found[0]["archive_download_url"])
                break
        else:
            sys.exit(f"no successful pull-request run of {commit} left a `{ARTIFACT}` artifact")
    else:
        forge = gitlab()
        base = f"/projects/{urllib.parse.quote(project, safe='')}"
        requests = forge.call("GET", f"{base}/repository/commits/{commit}/merge_requests")
        if not requests:
            sys.exit(f"{commit} belongs to no merge request: nothing was reviewed")
        pipelines = forge.call("GET", f"{base}/merge_requests/{requests[0]['iid']}/pipelines")
        for pipeline in pipelines:
            jobs = forge.call("GET", f"{base}/pipelines/{pipeline['id']}/jobs?scope=success")
            found = [j for j in jobs if j["name"] == WORKFLOW_JOB]
            if found:
                archive = forge.download(f"{base}/jobs/{found[0]['id']}/artifacts")
                break
        else:
            sys.exit(f"no successful `{WORKFLOW_JOB}` job in the pipelines of that merge request")
    plans.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(archive)) as unpacked:
        for member in unpacked.namelist():
            # GitLab keeps the artifact's paths (plans/NAME.json), GitHub its contents.
            name = Path(member).name
            if name and not member.endswith("/"):
                (plans / name).write_bytes(unpacked.read(member))
    print(f"plans of {commit}: {', '.join(sorted(p.name for p in plans.glob('*.json')))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    posting = commands.add_parser("comment")
    fetching = commands.add_parser("fetch-plans")
    for sub in (posting, fetching):
        sub.add_argument("forge", choices=["github", "gitlab"])
        sub.add_argument("--project", required=True)
        sub.add_argument("plans", type=Path)
    posting.add_argument("--number", required=True)
    fetching.add_argument("--commit", required=True)
    args = parser.parse_args()
    if args.command == "comment":
        comment(args.forge, args.project, args.number, args.plans)
    else:
        fetch_plans(args.forge, args.project, args.commit, args.plans)


if __name__ == "__main__":
    main()
