"""A report as a person sees it: ``report.html`` rendered by headless Chromium into a PNG.

    python -m benchmarks.report_screenshot quickstart-report/report.html -o report.png

Writes the whole page (cropped to its content) and, with ``--pieces``, the same cut into screen-sized parts
that are easier to look at. Also says whether every picture of the page loaded in the browser. Needs Debian's
``chromium`` package (``apt-get install chromium``; ``.ci/test`` installs it for the tests).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

WIDTH = 1200
CHECK = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  // Blocks whose content is wider than the block: cut off, or only seen by scrolling sideways.
  const clipped = [...document.querySelectorAll("pre, table, p, li, h1, h2, h3")]
    .filter(el => el.scrollWidth > el.clientWidth + 1).length;
  document.title = `images ${document.images.length} broken ${broken} height ${document.body.scrollHeight} ` +
    `clipped ${clipped}`;
});
</script>"""


def chromium() -> str | None:
    """The Chromium executable, or None where it is not installed."""
    return next((path for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if (path := shutil.which(name))), None)


def _run(args: list[str]) -> str:
    exe = chromium()
    if exe is None:
        raise RuntimeError("Chromium is not installed (apt-get install chromium)")
    done = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-1000:]}")
    return done.stdout


def page_facts(html: Path) -> dict[str, int]:
    """What the browser saw once the page loaded (``WIDTH`` pixels wide): its images, how many failed to load,
    the page height, and how many blocks of text hold content wider than themselves (``clipped``)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(html.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
        dom = _run([f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri()])
    found = re.search(r"<title>images (\d+) broken (\d+) height (\d+) clipped (\d+)</title>", dom)
    if found is None:
        raise RuntimeError("the page did not finish loading in Chromium")
    images, broken, height, clipped = map(int, found.groups())
    return {"images": images, "broken": broken, "height": height, "clipped": clipped}


def screenshot(html: Path, out: Path, width: int = WIDTH) -> Path:
    """The whole page as a PNG ``width`` pixels wide, cropped to its content."""
    from PIL import Image

    height = page_facts(html)["height"] + 40
    _run([f"--window-size={width},{height}", f"--screenshot={out}", html.resolve().as_uri()])
    with Image.open(out) as image:
        image.crop((0, 0, width, min(height, image.height))).save(out)
    return out


def pieces(shot: Path, height: int = 1500) -> list[Path]:
    """``shot`` cut into parts ``height`` pixels tall: ``name-1.png``, ``name-2.png``, ..."""
    from PIL import Image

    out = []
    with Image.open(shot) as image:
        for i, top in enumerate(range(0, image.height, height), 1):
            part = shot.with_name(f"{shot.stem}-{i}.png")
            image.crop((0, top, image.width, min(top + height, image.height))).save(part)
            out.append(part)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="a report.html")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.png"))
    parser.add_argument("--pieces", action="store_true", help="also cut it into screen-sized parts")
    args = parser.parse_args(argv)
    if not args.html.is_file():
        parser.error(f"{args.html}: no such file")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    facts = page_facts(args.html)
    shot = screenshot(args.html, args.output)
    parts = pieces(shot) if args.pieces else []
    print(f"{shot}: {facts['images']} images, {facts['broken']} failed to load, {facts['clipped']} block(s) wider "
          f"than the page, page {facts['height']} px tall"
          + (f"; {len(parts)} parts: {', '.join(p.name for p in parts)}" if parts else ""))


if __name__ == "__main__":
    main()
