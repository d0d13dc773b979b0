"""GraphiQL in a real headless Chromium: offline assets, and a README query returns
seeded data. A screenshot is saved in the test's temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import Browser, chromium_path
from tests.factories import serve

ROOT = Path(__file__).resolve().parents[1]
QUERY = '{ student(studentId: "S00001") { studentId name analytics { letter } } }'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    chromium_path()
    db = tmp_path_factory.mktemp("graphiql") / "g.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "db.seed",
            "--students",
            "50",
            "--grades-per-student",
            "4",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    with serve(
        [sys.executable, str(ROOT / "app.py")],
        db.parent,
        DATABASE_URL=f"sqlite:///{db}",
    ) as port:
        yield port


def test_graphiql_runs_a_query_with_nothing_leaving_loopback(
    server: int, tmp_path: Path
) -> None:
    browser = Browser()
    try:
        browser.goto(f"http://127.0.0.1:{server}/graphql")
        browser.wait_for(
            "document.querySelector('.graphiql-query-editor .CodeMirror') !== null"
        )
        browser.evaluate(
            "document.querySelector('.graphiql-query-editor .CodeMirror')"
            f".CodeMirror.setValue({json.dumps(QUERY)})"
        )
        browser.evaluate("document.querySelector('.graphiql-execute-button').click()")
        text = browser.wait_for(
            "(() => { const r = document.querySelector('.result-window');"
            " return r && r.innerText.includes('S00001') ? r.innerText : ''; })()"
        )
        browser.screenshot(tmp_path / "graphiql.png")
        requests = list(browser.requests)
    finally:
        browser.close()

    assert '"studentId": "S00001"' in text
    assert '"letter"' in text
    outside = [
        url
        for url in requests
        if not url.startswith(
            (f"http://127.0.0.1:{server}/", "data:", "blob:", "about:")
        )
    ]
    assert outside == []
    assert any(url.endswith("/static/graphiql/graphiql.min.js") for url in requests)
