"""The README tour runs as written: every ``bash``/``sh`` and ``python`` code block of README.md,
in order, in a temporary copy of the repository (``configs/`` and the README beside a link to the
real ``../shared`` folder), with the installed ``factorgym`` on PATH and ``./store`` as the store.
Python blocks share one namespace (a later block may use ``tensor`` from an earlier one); a bash
block runs with ``set -euo pipefail``. Blocks in any other language (``json``, ``yaml``, ``text``,
untagged) are shown, not run.

Marker convention: an HTML comment on the line right before a block's opening fence (invisible
in the rendered README) says how the test treats the block. Use it for blocks that cannot run
offline or take long, and say why:

    <!-- readme: skip installs the venv; make test would run this test again -->
        the block is not run (give the reason after ``skip``)
    <!-- readme: fake-exchange -->
        each ``factorgym download`` line gets ``--base-url <URL>`` of the loopback fake exchange
        (tests/fake_exchange.py, clock at 2023-05-02, no faults) appended: the block runs offline
    <!-- readme: slow -->
        run only by the slow test (``pytest -m slow``), e.g. a training run of minutes

Anything else after ``readme:`` is an error, so a typo cannot silently skip a block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN_LANGS = {"bash", "sh", "python"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*readme:\s*(?P<kind>[\w-]+)(?P<why>.*?)-->\s*$")
MARKS = ("skip", "fake-exchange", "slow")


def readme_blocks(text: str) -> list[dict]:
    """Code blocks in order: ``{"lang", "code", "line", "mark", "why"}`` (line = the fence's, 1-based)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        mark = why = None
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "") if start else ""
        mm = _MARK.match(prev.strip())
        if mm:
            mark, why = mm["kind"], mm["why"].strip()
            if mark not in MARKS:
                raise ValueError(f"README.md line {start}: unknown readme marker {mark!r}; use one of {MARKS}")
            if mark == "skip" and not why:
                raise ValueError(f"README.md line {start}: 'readme: skip' needs a reason")
        blocks.append({"lang": lang, "code": "\n".join(lines[start + 1:j]), "line": start + 1, "mark": mark, "why": why})
        i = j + 1
    return blocks


def test_marker_parsing():
    text = textwrap.dedent("""\
        ```bash
        echo run
        ```
        <!-- readme: skip needs the internet -->
        ```bash
        echo no
        ```
        ```json
        {}
        ```
        """)
    b = readme_blocks(text)
    assert [(x["lang"], x["mark"]) for x in b] == [("bash", None), ("bash", "skip"), ("json", None)]
    assert b[1]["why"] == "needs the internet"
    with pytest.raises(ValueError, match="unknown readme marker 'skp'"):
        readme_blocks("<!-- readme: skp -->\n```bash\necho\n```\n")


_DRIVER = r'''
import json, subprocess, sys, time, traceback
blocks = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
ns = {"__name__": "__readme__"}
for b in blocks:
    head = f"README.md line {b['line']} ({b['lang']}): {b['code'].splitlines()[0] if b['code'] else ''}"
    print(f"=== {time.perf_counter() - t0:7.1f} s  {head}", flush=True)
    if b["lang"] == "python":
        try:
            exec(compile(b["code"], f"README.md:{b['line']}", "exec"), ns)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED {head}", flush=True)
            sys.exit(1)
    else:
        rc = subprocess.run(["bash", "-euo", "pipefail", "-c", b["code"]]).returncode
        if rc:
            print(f"FAILED {head} (exit {rc})", flush=True)
            sys.exit(1)
print("README OK", flush=True)
'''


def _run_tour(tmp_path: Path, subprocess_env: dict, shared_data: Path, *, include_slow: bool) -> str:
    from fake_exchange import FakeExchange

    blocks = [b for b in readme_blocks(README.read_text()) if b["lang"] in RUN_LANGS and b["mark"] != "skip"
              and (include_slow or b["mark"] != "slow")]
    assert blocks, "README.md has no runnable block"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text(README.read_text())
    subprocess.run(["cp", "-r", str(ROOT / "configs"), str(repo / "configs")], check=True)
    (tmp_path / "shared").symlink_to(shared_data.parent, target_is_directory=True)
    fx = FakeExchange(fault_rate=0.0)
    fx.start()
    try:
        for b in blocks:
            if b["mark"] == "fake-exchange":
                b["code"] = re.sub(r"(factorgym download[^\n]*)", rf"\1 --base-url {fx.url}", b["code"])
        (tmp_path / "blocks.json").write_text(json.dumps(blocks))
        (tmp_path / "driver.py").write_text(_DRIVER)
        env = {k: v for k, v in subprocess_env.items() if k != "FACTORGYM_STORE"}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["MPLBACKEND"] = "Agg"
        out = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")], cwd=repo,
                             env=env, capture_output=True, text=True, timeout=1500)
    finally:
        fx.stop()
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "README OK" in out.stdout, log[-6000:]
    return log


@pytest.mark.slow  # ~70 s of subprocesses; the marker parsing stays in the default run
def test_readme_tour_runs_as_written(tmp_path, subprocess_env, shared_data):
    log = _run_tour(tmp_path, subprocess_env, shared_data, include_slow=False)
    print("\n".join(ln for ln in log.splitlines() if ln.startswith("===")))  # seconds per block (pytest -s)
    assert "factorgym data rm" in README.read_text() and "removed" in log


@pytest.mark.slow
def test_readme_tour_with_slow_blocks(tmp_path, subprocess_env, shared_data):
    if not any(b["mark"] == "slow" for b in readme_blocks(README.read_text())):
        pytest.skip("no README block is marked slow: the default test ran them all")
    _run_tour(tmp_path, subprocess_env, shared_data, include_slow=True)
