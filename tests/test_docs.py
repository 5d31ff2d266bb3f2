"""The documentation site: it builds strictly (broken links, missing pages or snippets fail), its generated tables
page matches the code, and the README stays a short front page."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path):
    if shutil.which("mkdocs") is None:
        pytest.fail("mkdocs is not installed (pip install -e '.[docs]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    extending = (tmp_path / "site" / "extending" / "index.html").read_text()
    for included in ("FirstBit", "EnsembleGatedMLP", "final_spread", "report_section", "create_run"):
        assert included in extending, included  # the snippets from the tests are in the page


def test_the_tables_page_is_what_the_code_says():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "docs" / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "reference" / "tables.md").read_text() == module.page(), \
        "docs/reference/tables.md is stale: run python docs/make_tables.py"


def test_the_readme_is_a_front_page_and_no_user_text_names_an_issue():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "pip install -e \".[test]\" && python -m pytest" in readme  # the test command CI runs
    for path in [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("src/ontogeny/recipes/*.toml")]:
        assert not re.search(r"\bissues? #?\d", path.read_text(), re.IGNORECASE), path
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
