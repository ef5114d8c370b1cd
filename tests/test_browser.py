"""The built book in a real browser: headless Chromium (Debian's, driven by Playwright; no
browser download) opens every page of the site over HTTP on 127.0.0.1 and checks what a reader
sees: no console errors and no request leaving the machine, every formula typeset by the MathJax
the site ships (no `$` left in the text outside code, no raw `\\(`, `\\[`, no MathJax error), every image loaded, every
internal link and anchor resolving, code outputs on the chapters, and a search that finds
"Jacobian". It saves the first screen of each page in the table of contents as
`_build/screenshots/<page>.png` (beside the site's `html` folder) for a person to look at.

`.ci/run` installs Chromium; elsewhere, without one, these tests skip (and fail under CI=true).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Playwright adds --headless, --no-sandbox (chromium_sandbox=False) and a fresh --user-data-dir.


def toc_pages() -> list[str]:
    """Every file of _toc.yml (root, chapters, parts and sections), as `book/ch01_...`."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("chapters"))
            walk(entry.get("sections"))

    walk(toc.get("chapters"))
    walk(toc.get("parts"))
    return [str(Path(f).with_suffix("")) for f in files]


def is_chapter(page: str) -> bool:
    return re.match(r"ch\d+", Path(page).name) is not None


def fail_on(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n".join(problems[:30]) + (f"\n... and {len(problems) - 30} more" if len(problems) > 30 else "")
        pytest.fail(f"{what}:\n{shown}", pytrace=False)


class _Ids(HTMLParser):
    """The anchors of a page (`id` and `name` attributes) and the target of a meta refresh."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.refresh: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh":
            match = re.search(r"url=(.+)", attrs.get("content") or "", re.I)
            self.refresh = match.group(1).strip() if match else None


@functools.lru_cache(maxsize=None)
def parse_page(path: Path) -> _Ids:
    parser = _Ids()
    parser.feed(path.read_text(errors="replace"))
    return parser


@dataclass
class Visit:
    url: str
    errors: list[str] = field(default_factory=list)          # console errors, page errors, failed loads
    external: list[str] = field(default_factory=list)        # requests that would leave the machine
    mathjax_scripts: list[str] = field(default_factory=list)
    math: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    outputs: int = 0
    screenshot: Path | None = None


# Run in the page once it has loaded: waits for MathJax and the fonts, then reports.
PAGE_REPORT = r"""
async () => {
  const withTimeout = (promise, ms) => Promise.race([promise, new Promise(r => setTimeout(r, ms))]);
  const report = {};
  const mj = window.MathJax;
  report.mathjax = !!(mj && mj.startup && mj.startup.promise);
  if (report.mathjax) await withTimeout(mj.startup.promise, 20000);
  await withTimeout(document.fonts.ready, 10000);

  // Formulas: every Sphinx math node holds MathJax output, and none of it is an error
  // (merror) or an undefined macro (which MathJax's noundefined shows as a red \name).
  const mathNodes = [...document.querySelectorAll('.math')];
  report.mathNodes = mathNodes.length;
  report.untypeset = mathNodes.filter(n => !n.querySelector('mjx-container'))
                              .map(n => n.textContent.slice(0, 80));
  report.errorNodes = document.querySelectorAll('mjx-merror, merror, [data-mjx-error]').length;
  report.bad = [];
  if (report.mathjax && mj.startup.document && mj.startup.toMML) {
    for (const item of mj.startup.document.math) {
      const mml = mj.startup.toMML(item.root);
      if (/<merror|<mtext mathcolor="red">\\/.test(mml)) report.bad.push(item.math);
    }
  }
  report.version = report.mathjax ? mj.version : null;

  // TeX left in the text outside code: any $ at all (the course writes no currency, so a lone $
  // is a formula torn apart, e.g. by a line that Markdown read as a list item), \( \) \[ \],
  // or \begin{..}.
  const skip = 'pre, code, script, style, noscript, template, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  const pattern = /\$|\\[()\[\]]|\\(begin|end)\{/;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest(skip)) continue;
    const m = node.textContent.match(pattern);
    if (m) raw.push(node.textContent.slice(Math.max(0, m.index - 40), m.index + 40));
  }
  report.raw = raw;

  // Images: load the lazy ones too, then read their natural size.
  const images = [...document.images];
  images.forEach(img => { img.loading = 'eager'; });
  await withTimeout(Promise.all(images.map(img => img.complete ? null :
    new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }))), 15000);
  report.images = images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth}));

  report.links = [...document.querySelectorAll('a[href], link[href]')].map(a => a.href);
  report.mathjaxScripts = [...document.querySelectorAll('script[src]')].map(s => s.src)
                            .filter(src => /mathjax/i.test(src));
  report.outputs = [...document.querySelectorAll('.cell_output')]
                     .filter(o => o.getBoundingClientRect().height > 0).length;
  return report;
}
"""


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        message = "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_page(browser, base: str, visit: Visit):
    """A page whose errors land in `visit`, and whose requests may not leave the site."""
    context = browser.new_context(viewport=VIEWPORT)

    def refuse(request_route):
        visit.external.append(request_route.request.url)
        request_route.abort()

    # Only requests for other origins are intercepted (a regex is matched inside the browser
    # driver, so the site's own files load at full speed).
    context.route(re.compile(f"^(?!{re.escape(base)})"), refuse)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and visit.errors.append(
        f"console: {msg.text} ({msg.location.get('url', '')})"))
    page.on("pageerror", lambda exc: visit.errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", lambda req: req.url.startswith(base) and visit.errors.append(
        f"failed: {req.url} ({req.failure})"))
    page.on("response", lambda resp: resp.status >= 400 and visit.errors.append(
        f"HTTP {resp.status}: {resp.url}"))
    return context, page


def site_pages(site: Path) -> list[str]:
    """Every HTML page of the site but the (empty) general index and the theme's own templates."""
    pages = [p.relative_to(site).as_posix() for p in sorted(site.rglob("*.html"))]
    return [p for p in pages if not p.split("/")[0].startswith("_") and p != "genindex.html"]


@pytest.fixture(scope="module")
def visits(site, server, browser) -> dict[str, Visit]:
    shots = site.parent / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    toc = {f"{name}.html" for name in toc_pages()}
    result = {}
    for name in site_pages(site):
        visit = result[name] = Visit(url=server + name)
        refresh = parse_page(site / name).refresh
        if refresh:  # a redirect (index.html): its target is checked as a link
            visit.links = [urljoin(visit.url, refresh)]
            continue
        context, page = new_page(browser, server, visit)
        try:
            page.goto(visit.url, wait_until="load")
            report = page.evaluate(PAGE_REPORT)
            visit.mathjax_scripts = report["mathjaxScripts"]
            visit.math = {key: report[key] for key in
                          ("mathjax", "version", "mathNodes", "untypeset", "errorNodes", "bad", "raw")}
            visit.images, visit.links, visit.outputs = report["images"], report["links"], report["outputs"]
            if name in toc:
                visit.screenshot = shots / f"{Path(name).stem}.png"
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(visit.screenshot))
        finally:
            context.close()
    return result


def test_every_page_of_the_site_is_visited(visits):
    assert {f"{name}.html" for name in toc_pages()} <= set(visits), sorted(visits)
    assert "search.html" in visits


def test_no_console_errors_and_nothing_leaves_the_machine(visits):
    problems = [f"{name}: {error}" for name, v in visits.items() for error in v.errors]
    problems += [f"{name}: requests {url} from outside the site (a CDN?)"
                 for name, v in visits.items() for url in v.external]
    fail_on(problems, "console errors or requests leaving the machine")


def test_every_formula_is_typeset_by_the_local_mathjax(server, visits):
    problems, pages_with_math = [], 0
    for name, visit in visits.items():
        math = visit.math
        if not math:
            continue
        if math["mathNodes"] and not math["mathjax"]:
            problems.insert(0, f"{name}: MathJax did not load ({visit.mathjax_scripts})")
        problems += [f"{name}: TeX left unrendered in the text: {raw!r}" for raw in math["raw"]]
        if math["mathNodes"] == 0 or not math["mathjax"]:
            continue
        pages_with_math += 1
        if len(visit.mathjax_scripts) != 1 or not visit.mathjax_scripts[0].startswith(server + "_static/mathjax/"):
            problems.append(f"{name}: MathJax must load once, from the site's _static/mathjax: {visit.mathjax_scripts}")
        if not math["version"].startswith("3."):
            problems.append(f"{name}: MathJax {math['version']} loaded, not 3.x")
        problems += [f"{name}: formula left untypeset: {tex!r}" for tex in math["untypeset"]]
        problems += [f"{name}: MathJax error or undefined macro in {tex!r}" for tex in math["bad"]]
        if math["errorNodes"] and not math["bad"]:
            problems.append(f"{name}: {math['errorNodes']} MathJax error nodes")
    fail_on(problems, "formulas not typeset")
    assert pages_with_math >= 1, "no page of the book shows a formula"


def test_every_image_loads(visits):
    broken = [f"{name}: {i['src']}" for name, v in visits.items() for i in v.images if i["width"] == 0]
    fail_on(broken, "images that did not load")
    for name in visits:
        if is_chapter(Path(name).stem):
            assert len(visits[name].images) >= 1, f"{name} shows no image"


def test_every_internal_link_and_anchor_resolves(site, server, visits):
    checked, broken = 0, []
    for name, visit in visits.items():
        for href in visit.links:
            if not href.startswith(server):
                continue  # links out of the site are not followed
            parts = urlsplit(href)
            path = unquote(parts.path)[len(urlsplit(server).path):]
            target = site / path
            if not path or path.endswith("/"):
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{name} -> {href}: no such file")
            elif parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in parse_page(target).ids:
                broken.append(f"{name} -> {href}: no element with id {unquote(parts.fragment)!r}")
    fail_on(broken, "internal links that do not resolve")
    assert checked > 10


def test_chapters_show_code_outputs(visits):
    chapters = [name for name in visits if is_chapter(Path(name).stem)]
    assert chapters
    for name in chapters:
        assert visits[name].outputs >= 1, f"{name}: no code output shown"


def test_screenshots_of_each_page_in_the_toc(site, visits):
    for name in toc_pages():
        shot = site.parent / "screenshots" / f"{Path(name).name}.png"
        assert shot.is_file() and shot.stat().st_size > 10_000, shot


def test_search_finds_jacobian(browser, server):
    visit = Visit(url=server + "search.html?q=Jacobian")
    context, page = new_page(browser, server, visit)
    try:
        page.goto(visit.url, wait_until="load")
        # Sphinx lists the results one by one, then says "Search finished, found N page(s)".
        page.wait_for_function(
            "/finished|did not match/i.test(document.querySelector('#search-results .search-summary')"
            "?.textContent || '')", timeout=20000)
        results = page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
    finally:
        context.close()
    assert visit.errors == [] and visit.external == [], visit
    assert any(is_chapter(Path(urlsplit(url).path).stem) for url in results), \
        f"searching 'Jacobian' lists no chapter: {results}"
