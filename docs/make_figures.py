"""Write the phenomena's figures in docs/ from their recipes' runs, as the report draws them (headless Chromium,
the browser test's settings; a browser is never downloaded):

    python docs/make_figures.py --syntax runs/syntax-drops --hierarchy runs/hierarchy-data \
        --counting runs/letter-counting

Each run must have been analysed (`ontogeny analyze RUN`) so that its report holds the figures named below.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ontogeny.report import write_report

DOCS = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FIGURES = {  # the report's figure -> the file in docs/
    "syntax": {"fig-language-structure": "syntax-structure.png", "fig-language-onsets": "syntax-onsets.png"},
    "hierarchy": {"fig-rules-over-training": "hierarchy-rules.png", "fig-rules-share": "hierarchy-share.png"},
    "counting": {"fig-counting-piece-share": "counting-pieces.png"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for kind in FIGURES:
        parser.add_argument(f"--{kind}", type=Path, help="the recipe's run directory")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        for kind, figures in FIGURES.items():
            run = getattr(args, kind)
            if run is None:
                continue
            report = write_report(run, Path(tmp) / f"{kind}.html")
            page.goto(Path(report).absolute().as_uri())
            for div, name in figures.items():
                figure = page.locator(f"#{div}")
                figure.wait_for(state="visible")
                page.wait_for_timeout(500)  # plotly draws after the element appears
                figure.screenshot(path=DOCS / name)
                print(f"wrote {DOCS / name} from {run}")
        browser.close()


if __name__ == "__main__":
    main()
