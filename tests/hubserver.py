"""A tiny stand-in for the Hugging Face Hub's download endpoints, for tests without the network.

It serves model repos held in memory ({repo_id: {filename: bytes}}) on 127.0.0.1 the way the Hub
answers huggingface_hub's `snapshot_download`: the repo info (``/api/models/REPO/revision/REV``), the
file listing (``/api/models/REPO/tree/REV``) and the files (``/REPO/resolve/REV/FILE``, HEAD and GET,
with the ``X-Repo-Commit`` and ``ETag`` headers). Unknown repos and revisions get the Hub's 404s
(``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``). Every request is logged in ``server.log``.
"""

from __future__ import annotations

import hashlib
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

API = re.compile(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/.*)?")
RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def commit_of(files: dict[str, bytes]) -> str:
    """A stable 40-hex commit id for a repo's content."""
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()


def blob_id(data: bytes) -> str:
    """The git blob id of ``data``, which the Hub gives as the ETag of a file stored in git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *_args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.log.append((self.command, path))
        if m := API.fullmatch(path):
            repo_id, what, rev = m.groups()
            files = self._repo(repo_id, rev)
            if files is None:
                return
            sha = commit_of(files)
            if what == "revision":
                doc: object = {
                    "id": repo_id,
                    "sha": sha,
                    "siblings": [{"rfilename": f} for f in sorted(files)],
                }
            else:
                doc = [
                    {"type": "file", "path": f, "size": len(data), "oid": blob_id(data)}
                    for f, data in sorted(files.items())
                ]
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"}, body)
        elif m := RESOLVE.fullmatch(path):
            repo_id, rev, name = m.groups()
            files = self._repo(repo_id, rev)
            if files is None:
                return
            if name not in files:
                self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
                return
            data = files[name]
            headers = {"X-Repo-Commit": commit_of(files), "ETag": f'"{blob_id(data)}"'}
            self._send(200, data, headers, body)
        else:
            self._send(404, b"not found", {}, body)

    def _repo(self, repo_id: str, rev: str) -> dict[str, bytes] | None:
        files = self.server.repos.get(repo_id)
        if files is None:
            self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, True)
            return None
        if rev not in ("main", commit_of(files)):
            self._send(404, b"Revision not found", {"X-Error-Code": "RevisionNotFound"}, True)
            return None
        return files

    def _send(self, code: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repos = repos
        self.log: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fetched(self) -> set[str]:
        """The files downloaded (GET) so far, by name."""
        return {m.group(3) for method, p in self.log if method == "GET" and (m := RESOLVE.fullmatch(p))}
