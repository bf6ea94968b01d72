"""Every code block of README.md and docs/ runs as written: the python and bash blocks of
one page, in order, as one script in a fresh interpreter inside an empty folder (with
``data_scripts/`` linked in, as in a clone). The set-up commands (``pip install ...``)
are CI's own first step and are not repeated here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced python or bash block, in order."""
    return [(lang, code) for lang, code in FENCE.findall(text) if lang in ("python", "bash")]


def script(text: str) -> str:
    """The page as one Python script: python blocks as they are, bash blocks through bash
    (stopping at the first failing command), set-up blocks left out."""
    parts = ["import subprocess"]
    for lang, code in blocks(text):
        if lang == "python":
            parts.append(code)
        elif not code.lstrip().startswith("pip install"):
            parts.append(
                f"subprocess.run(['bash', '-euo', 'pipefail', '-c', {code!r}], check=True)"
            )
    return "\n".join(parts)


PAGES = [
    page
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    if len(script(page.read_text())) > len("import subprocess")
]


def test_the_pages_with_code_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/guides/laplace.md", "docs/guides/regression.md"} <= names


def test_a_failing_block_fails_its_page(tmp_path):
    page = "```python\nx = 1\n```\n\n```bash\nfalse\n```\n"
    (tmp_path / "s.py").write_text(script(page))
    out = subprocess.run([sys.executable, "s.py"], cwd=tmp_path, capture_output=True)
    assert out.returncode != 0


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_runs_as_written(page, tmp_path):
    (tmp_path / "page.py").write_text(script(page.read_text()))
    (tmp_path / "data_scripts").symlink_to(ROOT / "data_scripts")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run(
        [sys.executable, "page.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
