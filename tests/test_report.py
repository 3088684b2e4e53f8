"""report.html in a real browser: Debian's headless Chromium, driven by Playwright, with the network cut off.

The browser tests skip (with the reason) when /usr/bin/chromium or the Playwright package is missing; they never
install anything. `.ci/run` installs Debian's chromium before the test suite. Screenshots are written to
``tests/artifacts/`` (git-ignored test artifacts) and their paths printed.

The tests that need no browser (re-rendering from a copied output folder, self-containment of the file) always run.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import REPO, SAMPLE_NAMES, SAMPLES, run_cli, run_in_process, write_random_feeds

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # a second wall: no host name resolves
]
LOCAL_SCHEMES = ("file:", "data:")
TIMESTAMP = re.compile(r"<div class=muted>precision-lab [^<]*·[^<]*UTC</div>")
DATA_IMG = re.compile(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


def fmt(value: float) -> str:
    """A metric value as the report prints it (4 significant digits)."""
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def cnn_sweep(tmp_path_factory) -> dict:
    """two_planted_cnn swept from a private copy of the model, with a --data folder (so tests may delete both)."""
    root = tmp_path_factory.mktemp("report_cnn")
    model = root / "model" / "two_planted_cnn.onnx"
    model.parent.mkdir()
    shutil.copy(SAMPLES / "two_planted_cnn.onnx", model)
    data = write_random_feeds(model, root / "data")
    out = root / "out"
    proc = run_in_process("sweep", str(model), "--data", str(data), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "model": model, "data": data, "out": out, "plan": json.loads((out / "plan.json").read_text())}


# Hostile node names: markup, attribute break-out, entities, quotes, non-ASCII. conv3 and conv6 are the planted
# layers, so two hostile names end up in the plan table too, not only in the layer table.
HOSTILE_NODES = {
    "conv3": "<script>alert(1)</script>",
    "conv6": '"><img src=x onerror=alert(2)>',
    "conv1": "a&b",
    "conv2": "卷积层_ü",
    "conv4": "it's \"quoted\" & <b>bold</b>",
    "conv5": "&lt;already-escaped&gt; &amp;",
}
HOSTILE_OUTPUTS = ("logits<script>alert(3)</script>", "probs\"'&<i>x</i> ✓")


def hostile_model(path: Path) -> Path:
    """two_planted_cnn with the names above; output ``fc`` renamed, plus a second output (an Identity copy)."""
    model = onnx.load(str(SAMPLES / "two_planted_cnn.onnx"))
    out1, out2 = HOSTILE_OUTPUTS
    for node in model.graph.node:
        node.name = HOSTILE_NODES.get(node.name, node.name)
        for i, name in enumerate(node.output):
            if name == "fc":
                node.output[i] = out1
    model.graph.node.append(helper.make_node("Identity", [out1], [out2], name="copy_out"))
    model.graph.output[0].name = out1
    model.graph.output.append(helper.make_tensor_value_info(out2, TensorProto.FLOAT, [1, 10]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def hostile_sweep(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report_hostile")
    model = hostile_model(root / "hostile.onnx")
    data = write_random_feeds(model, root / "data", count=24)
    out = root / "out"
    proc = run_in_process(
        "sweep", str(model), "--data", str(data), "--out", str(out), "--quiet",
        "--calib-samples", "16", "--eval-samples", "8",
    )
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "plan": json.loads((out / "plan.json").read_text())}


# -------------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium "
            "(apt-get install -y chromium; .ci/run installs it)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the Python package playwright is not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Opened:
    """A report open in a fresh browser context, with everything the page did recorded."""

    def __init__(self, browser, path: Path):
        self.requests: list[str] = []  # every URL the page asked for (routed or reported)
        self.blocked: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=True)
        self.context.route("**/*", self._route)
        page = self.page = self.context.new_page()
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._dialog)
        page.goto(path.resolve().as_uri(), wait_until="load")
        page.wait_for_load_state("networkidle")

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        if url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    @property
    def text(self) -> str:
        return self.page.evaluate("document.body.innerText")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    def assert_clean(self):
        errors = [(kind, text) for kind, text in self.console if kind in ("error", "assert")]
        assert not errors, f"console errors: {errors}"
        assert not self.page_errors, f"page errors: {self.page_errors}"
        assert not self.dialogs, f"dialogs opened: {self.dialogs}"
        assert not self.blocked, f"requests that tried to leave the file: {self.blocked}"
        leaving = [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]
        assert not leaving, f"requests that are not file:// or data: {leaving}"

    def close(self):
        self.context.close()


@pytest.fixture
def open_report(browser):
    opened = []

    def _open(path: Path) -> Opened:
        opened.append(Opened(browser, path))
        return opened[-1]

    yield _open
    for item in opened:
        item.close()


def layer_rows(page) -> list[dict]:
    """The rows of the layer table in DOM order: name, op, isolate key, visible."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#layers tbody tr')).map(r => ({
            name: r.cells[1].textContent,
            op: r.cells[2].textContent,
            isolate: r.cells[4].dataset.v,
            rank: r.cells[0].dataset.v,
            visible: r.offsetParent !== null && getComputedStyle(r).display !== 'none'}))"""
    )


# ------------------------------------------------------------------------------------------------ (a) render


def test_report_renders_offline_in_chromium(cnn_sweep, open_report):
    report = cnn_sweep["out"] / "report.html"
    plan = cnn_sweep["plan"]
    opened = open_report(report)
    text = opened.text
    opened.page.screenshot(path=str(_artifact("report-top.png")))  # the first screenful: what a reader sees first
    shot = opened.screenshot("report.png")
    assert shot.stat().st_size > 10_000

    opened.assert_clean()
    for heading in ("The plan", "Summary", "Sensitivity ranking", "Trade-off", "Per-output metrics",
                    "Per-channel breakdown", "All layers"):
        assert heading in text, heading
    assert plan["fp32_layers"], "two_planted_cnn must need FP32 layers"
    for name in plan["fp32_layers"]:
        assert name in text
    plan_value = fmt(plan["achieved"]["value"])
    all_int8 = fmt(plan["baselines"]["all_int8"])
    assert f"rel-l2 = {plan_value} (passes tolerance 0.05)" in text
    assert plan_value in text and all_int8 in text
    # the headline cards carry exactly these numbers
    cards = opened.page.locator(".headline .card .big").all_inner_texts()
    assert cards[1] == plan_value and cards[3] == all_int8, cards
    assert cards[2] == fmt(plan["verification"]["value"]), cards
    # the plan table lists exactly the plan's layers, in its order
    plan_table = opened.page.locator("section").first.locator("table").first
    assert plan_table.locator("tbody tr td:first-child, tr td:first-child").all_inner_texts() == plan["fp32_layers"]
    # every chart is an inline image that decoded (non-zero natural size)
    sizes = opened.page.evaluate(
        "() => Array.from(document.images).map(i => [i.src.slice(0, 26), i.naturalWidth, i.naturalHeight])"
    )
    assert len(sizes) >= 3  # sensitivity, positions, trade-off (+ per-channel when an output has it)
    for src, width, height in sizes:
        assert src.startswith("data:image/svg+xml") and width > 0 and height > 0, (src, width, height)


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshot: {ARTIFACTS / name}")
    return ARTIFACTS / name


def test_layer_table_sorts_and_filters(cnn_sweep, open_report):
    opened = open_report(cnn_sweep["out"] / "report.html")
    page = opened.page
    layers = json.loads((cnn_sweep["out"] / "result.json").read_text())
    initial = layer_rows(page)
    assert len(initial) == 8 and all(row["visible"] for row in initial)
    assert [int(r["rank"]) for r in initial] == list(range(1, 9))  # starts in rank order, ranks from 1

    def isolate_values():
        return [float(row["isolate"]) for row in layer_rows(page)]

    page.click('#layers th[data-col="4"]')  # isolate: ascending, then descending
    assert isolate_values() == sorted(isolate_values())
    assert isolate_values() != [float(r["isolate"]) for r in initial]
    page.click('#layers th[data-col="4"]')
    assert isolate_values() == sorted(isolate_values(), reverse=True)

    page.click('#layers th[data-col="1"]')  # layer name: alphabetical
    names = [row["name"] for row in layer_rows(page)]
    assert names == sorted(names) and names[0] == "conv1" and names[-1] == "fc", names
    page.click('#layers th[data-col="1"]')
    assert [row["name"] for row in layer_rows(page)] == sorted(names, reverse=True)

    page.fill("#filter", "conv6")
    visible = [row["name"] for row in layer_rows(page) if row["visible"]]
    assert visible == ["conv6"]
    page.fill("#filter", "GEMM")  # op type, case-insensitive
    assert [row["name"] for row in layer_rows(page) if row["visible"]] == ["fc"]
    page.fill("#filter", "conv")
    assert sorted(row["name"] for row in layer_rows(page) if row["visible"]) == [f"conv{i}" for i in range(1, 8)]
    page.fill("#filter", "no-such-layer")
    assert not any(row["visible"] for row in layer_rows(page))
    page.fill("#filter", "")
    assert all(row["visible"] for row in layer_rows(page))
    assert layers  # result.json read: the table was rendered from it
    opened.assert_clean()


# ------------------------------------------------------------------------------------------- (b) hostile names


def test_hostile_names_render_as_text(hostile_sweep, open_report):
    out, plan = hostile_sweep["out"], hostile_sweep["plan"]
    raw = (out / "report.html").read_text(encoding="utf-8")
    # the planted layers carry hostile names, so they are in the plan table too
    assert set(plan["fp32_layers"]) == {HOSTILE_NODES["conv3"], HOSTILE_NODES["conv6"]}

    opened = open_report(out / "report.html")
    page = opened.page
    text = opened.text
    opened.screenshot("report-hostile.png")
    opened.assert_clean()  # includes: no alert/confirm/prompt dialog fired

    for name in (*HOSTILE_NODES.values(), *HOSTILE_OUTPUTS):
        assert name in text, f"{name!r} is not shown verbatim"
    assert page.evaluate("document.scripts.length") == 1, "only the report's own script may exist"
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("b:text-is('bold'), i:text-is('x')").count() == 0  # <b>/<i> in names are not markup
    srcs = page.evaluate("() => Array.from(document.images).map(i => i.getAttribute('src').slice(0, 19))")
    assert srcs and all(src == "data:image/svg+xml;" for src in srcs), srcs
    handlers = page.evaluate(
        "() => Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes))"
        ".filter(a => a.name.startsWith('on')).map(a => a.name)"
    )
    assert handlers == []
    # plan table cells hold the names verbatim
    plan_cells = page.locator("section").first.locator("table").first.locator("td:first-child").all_inner_texts()
    assert plan_cells == plan["fp32_layers"]
    # the filter matches on the text, markup characters included
    page.fill("#filter", "<script>")
    visible = [row["name"] for row in layer_rows(page) if row["visible"]]
    assert visible == [HOSTILE_NODES["conv3"]]
    page.fill("#filter", "卷积层")
    assert [row["name"] for row in layer_rows(page) if row["visible"]] == [HOSTILE_NODES["conv2"]]
    page.fill("#filter", "")
    opened.assert_clean()

    # the raw HTML holds the escaped forms and never the live markup
    for escaped in (
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;",
        "a&amp;b",
        "卷积层_ü",
        "it&#x27;s &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;",
        "&amp;lt;already-escaped&amp;gt; &amp;amp;",
        "logits&lt;script&gt;alert(3)&lt;/script&gt;",
        "probs&quot;&#x27;&amp;&lt;i&gt;x&lt;/i&gt; ✓",
    ):
        assert escaped in raw, escaped
    for live in ("<script>alert", "<img src=x", "onerror=alert(2)>", "<b>bold", "<i>x"):
        assert live not in raw, live
    assert raw.count("<script") == 1


def test_hostile_names_in_charts_are_escaped_svg_text(hostile_sweep):
    """Charts are <img> data URIs, so nothing in them runs; still, each must be well-formed SVG with the names as
    text (matplotlib escapes them), or the browser shows a broken image."""
    raw = (hostile_sweep["out"] / "report.html").read_text(encoding="utf-8")
    svgs = [base64.b64decode(data).decode("utf-8") for data in DATA_IMG.findall(raw)]
    assert len(svgs) >= 3
    texts = []
    for svg in svgs:
        root = ET.fromstring(svg)  # raises on malformed XML
        assert not [e for e in root.iter() if e.tag.endswith("script") or e.tag.endswith("foreignObject")]
        texts.extend("".join(e.itertext()) for e in root.iter() if e.tag.endswith("text"))
    joined = "\n".join(texts)
    for name in (HOSTILE_NODES["conv3"], HOSTILE_NODES["conv6"]):
        assert name in joined, f"{name!r} missing from the sensitivity chart labels"


def test_dollar_signs_in_names_do_not_break_the_report(tmp_path):
    """Names with ``$`` must reach the charts as plain text, not matplotlib mathtext: ``$\\x$`` is not valid
    mathtext, and parsing it must not crash the sweep after all evaluations are done."""
    model = onnx.load(str(SAMPLES / "two_planted_cnn.onnx"))
    names = {"conv3": r"cost $\x$ (USD)", "conv7": "price $5 & $6"}
    for node in model.graph.node:
        node.name = names.get(node.name, node.name)
    path = tmp_path / "dollars.onnx"
    onnx.save(model, str(path))
    data = write_random_feeds(path, tmp_path / "data", count=24)
    out = tmp_path / "out"
    proc = run_in_process("sweep", str(path), "--data", str(data), "--out", str(out), "--quiet",
                   "--calib-samples", "16", "--eval-samples", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = (out / "report.html").read_text(encoding="utf-8")
    svg_text = "\n".join(base64.b64decode(d).decode("utf-8") for d in DATA_IMG.findall(raw))
    for name in names.values():
        assert name.replace("&", "&amp;") in raw
        assert name.replace("&", "&amp;") in svg_text, f"{name!r} is not plain text in the charts"


# ------------------------------------------------------------------------------------- (c) re-render from copy


def _sections(html_text: str) -> dict[str, str]:
    """Section heading -> the section's HTML, with the generation timestamp removed and chart data replaced by
    the chart's visible text (matplotlib's SVG ids and date differ between renders, the drawn text must not)."""
    html_text = TIMESTAMP.sub("", html_text)

    def chart_text(match):
        svg = base64.b64decode(match.group(1)).decode("utf-8")
        root = ET.fromstring(svg)
        return 'src="svg:' + "|".join("".join(e.itertext()) for e in root.iter() if e.tag.endswith("text")) + '"'

    html_text = DATA_IMG.sub(chart_text, html_text)
    parts = re.split(r"<section><h2>", html_text)
    sections = {"head": parts[0]}
    for part in parts[1:]:
        title, _, rest = part.partition("</h2>")
        sections[title] = rest
    return sections


@pytest.mark.parametrize("keep", ["whole folder", "result.json only"])
def test_report_command_rerenders_from_copied_folder_without_model(cnn_sweep, tmp_path, keep):
    out = cnn_sweep["out"]
    cnn_sweep["model"].unlink(missing_ok=True)  # the model and its data are gone
    shutil.rmtree(cnn_sweep["data"], ignore_errors=True)
    copy = tmp_path / "copied_out"
    if keep == "whole folder":
        shutil.copytree(out, copy)
        (copy / "report.html").unlink()
    else:
        copy.mkdir()
        shutil.copy(out / "result.json", copy / "result.json")

    proc = run_cli("report", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert (copy / "report.html").is_file()
    original = _sections((out / "report.html").read_text(encoding="utf-8"))
    again = _sections((copy / "report.html").read_text(encoding="utf-8").replace(str(copy), str(out)))
    assert list(again) == list(original)
    assert len(original) == 10  # head + 9 sections
    for title in original:
        assert again[title] == original[title], f"section {title!r} differs after re-rendering"

    # -o writes elsewhere and leaves the folder alone
    other = tmp_path / "elsewhere" / "r.html"
    other.parent.mkdir()
    proc = run_cli("report", str(copy), "-o", str(other))
    assert proc.returncode == 0, proc.stderr
    assert _sections(other.read_text(encoding="utf-8").replace(str(copy), str(out))) == original


# ----------------------------------------------------------------------------------------- (d) self-contained


EXTERNAL = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:|//|ftp:)""", re.I)
SVG_HREF = re.compile(r"""(?:xlink:)?href\s*=\s*["']([^"']*)["']""")


def _assert_self_contained(html_text: str) -> None:
    assert "http://" not in html_text and "https://" not in html_text
    assert not EXTERNAL.findall(html_text)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*//""", html_text)
    assert not re.search(r"<(?:link|iframe|object|embed|base|frame)\b", html_text, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", html_text, re.I)
    assert not re.search(r"@import|url\(\s*[\"']?(?!data:|#)", html_text)
    for src in re.findall(r"""\bsrc\s*=\s*["']([^"']*)["']""", html_text):
        assert src.startswith("data:"), src[:80]
    for data in DATA_IMG.findall(html_text):  # inside the charts: only in-document references
        svg = base64.b64decode(data).decode("utf-8")
        for href in SVG_HREF.findall(svg):
            assert href.startswith(("#", "data:")), href[:80]
        assert not re.search(r"url\(\s*[\"']?(?!#)", svg)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_report_is_self_contained(sample_sweeps, name):
    _assert_self_contained((sample_sweeps[name] / "report.html").read_text(encoding="utf-8"))


def test_hostile_report_is_self_contained(hostile_sweep):
    _assert_self_contained((hostile_sweep["out"] / "report.html").read_text(encoding="utf-8"))
