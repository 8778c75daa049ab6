"""diagnostics.html (one self-contained page) and ``bankllm report --format markdown|html``."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bankllm.cli import main
from diagnostics import report as rep
from diagnostics.html_report import render_html
from diagnostics.results import CheckResult, table
from tests.report_helpers import demo_report

NASTY = '<script>alert("x")</script> & <b>'


class Page(HTMLParser):
    """What the tests look at in a page: section ids, links, image sources, tags, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.meta: list[dict[str, str | None]] = []
        self.row_classes: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section" and a.get("id"):
            self.sections.append(str(a["id"]))
        if a.get("href") is not None:
            self.hrefs.append(str(a["href"]))
        if a.get("src") is not None:
            self.srcs.append(str(a["src"]))
        if tag == "meta":
            self.meta.append(a)
        if tag == "tr" and a.get("class"):
            self.row_classes.append(str(a["class"]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A realistic report plus a check full of markup, written to a report dir."""
    root = tmp_path_factory.mktemp("html")
    report = demo_report(root / "run")
    nasty = CheckResult("custom_check", "WARN", f"reason {NASTY}", {"label": NASTY},
                        details={"tables": [table(f"title {NASTY}", [NASTY], [[NASTY]],
                                                  ["FAIL"])],
                                 "notes": [f"note {NASTY}"],
                                 "examples": [{"prompt": NASTY, "why": "x"}]})
    report["checks"].append(nasty.to_dict())
    report["tally"]["WARN"] += 1
    out = root / "reports"
    paths = rep.write_report(report, out)
    return report, out, paths


def test_write_report_embeds_each_chart_it_writes(written):
    report, out, paths = written
    assert sorted(p.name for p in paths) == [
        "diagnostics.html", "diagnostics.json", "diagnostics.svg", "loss_curves.png",
        "overfitting_gap.png", "scaling_curve.png"]
    page = Page((out / "diagnostics.html").read_text(encoding="utf-8"))
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in page.srcs]
    assert all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert sorted(embedded) == sorted((out / n).read_bytes() for n in
                                      ("loss_curves.png", "overfitting_gap.png",
                                       "scaling_curve.png"))
    assert not [u for u in page.srcs + page.hrefs if u.startswith(("http://", "https://", "//"))]
    assert "link" not in page.tags and "script" not in page.tags


def test_page_has_tally_verdict_lines_and_a_section_per_check(written):
    report, out, _ = written
    page = Page((out / "diagnostics.html").read_text(encoding="utf-8"))
    names = [c["name"] for c in report["checks"]]
    assert page.sections == ["run"] + [f"check-{n}" for n in names]
    assert [h for h in page.hrefs if h.startswith("#")] == [f"#check-{n}" for n in names]
    assert "3 PASS 3 WARN 1 FAIL 1 SKIP overall FAIL" in page.all_text
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.meta
    for c in report["checks"]:
        assert c["reason"] in page.all_text


def test_page_shows_intervals_row_status_and_notes(written):
    report, out, _ = written
    text = (out / "diagnostics.html").read_text(encoding="utf-8")
    section = text.split('id="check-consistency"')[1].split("</section>")[0]
    cons = next(c for c in report["checks"] if c["name"] == "consistency")["values"]
    page = Page(section)
    assert "95% interval" in page.all_text and "MDE" in page.all_text
    assert f"{cons['consistency_ci95_low']:.4g} to {cons['consistency_ci95_high']:.4g}" \
        in page.all_text
    assert "r-FAIL" in page.row_classes and "failures (2)" in page.all_text
    over = Page(text.split('id="check-overfitting"')[1].split("</section>")[0])
    assert over.row_classes.count("r-FAIL") == 3 and "Per-epoch losses" in over.all_text


def test_all_text_is_escaped(written):
    _, out, _ = written
    text = (out / "diagnostics.html").read_text(encoding="utf-8")
    page = Page(text)
    assert "<script>" not in text and "<b>" not in text
    assert "script" not in page.tags and "b" not in page.tags
    for needle in (f"reason {NASTY}", f"title {NASTY}", f"note {NASTY}"):
        assert needle in page.all_text
    assert page.all_text.count(NASTY) >= 6  # reason x2, value, title, header, cell, note, example


def test_page_without_charts_or_run_still_renders():
    report = rep.build_report([CheckResult("x", "PASS", "fine")], {"path": "/nowhere",
                                                                  "error": "no metrics"}, {})
    assert rep.render_charts(report) == {}
    page = Page(render_html(report))
    assert page.sections == ["run", "check-x"] and page.srcs == []
    assert "no metrics" in page.all_text


@pytest.mark.slow  # starts a real browser; .ci/run installs chromium while the unit tests run
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no chromium binary on PATH: install it (apt-get install chromium) "
                           "to open the report in a real headless browser")
def test_report_opens_in_a_headless_browser(written, tmp_path):
    report, out, _ = written
    url = (out / "diagnostics.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=420,2000"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                         timeout=180, check=True).stdout
    page = Page(dom)
    assert page.sections == ["run"] + [f"check-{c['name']}" for c in report["checks"]]
    subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=180,
                   check=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert int.from_bytes(png[16:20], "big") == 420  # IHDR width: the phone-width window


def test_markdown_summary_has_a_row_per_check_and_the_baseline_change(written):
    report, _, _ = written
    md = rep.render_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(report["checks"])
    assert md.startswith("### ❌ bankllm diagnostics: FAIL · run synthetic")
    assert "3 PASS · 3 WARN · 1 FAIL · 1 SKIP" in md
    cons = next(c for c in report["checks"] if c["name"] == "consistency")["values"]
    row = next(r for r in rows if "| consistency |" in r)
    assert row.startswith("| ⚠️ WARN |")
    assert (f"consistency {cons['consistency']:.3g} [{cons['consistency_ci95_low']:.3g}, "
            f"{cons['consistency_ci95_high']:.3g}]") in row
    reg = next(c for c in report["checks"] if c["name"] == "regression")["values"]
    assert f"**Val loss against the baseline:** {reg['rel_change']:+.2%} vs baseline" in md
    nasty = next(r for r in rows if "custom_check" in r)
    assert "<script>" not in md and "&lt;script&gt;" in nasty
    assert nasty.count(" | ") == 3  # no unescaped | from the reason splits the row


def test_long_reasons_are_cut_at_a_word_and_close_their_code_span():
    cut = rep._shorten("word " * 40 + "`bankllm gate --force` tail", limit=60)
    assert len(cut) <= 60 and cut.endswith("word…")
    cut = rep._shorten("x " * 20 + "`bankllm gate --run RUN --update` " + "y " * 40, limit=60)
    assert cut.endswith("`…") and cut.count("`") == 2
    assert rep._shorten("short") == "short"


def test_bankllm_report_format_markdown_and_html(written, tmp_path, capsys):
    report, out, _ = written
    copy = tmp_path / "reports"
    copy.mkdir()
    shutil.copy(out / rep.REPORT_JSON, copy / rep.REPORT_JSON)
    assert main(["report", "--report-dir", str(copy), "--format", "markdown"]) == 0
    assert capsys.readouterr().out == rep.render_markdown(report)
    assert main(["report", "--report-dir", str(copy), "--format", "html"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == [
        "diagnostics.html", "diagnostics.svg", "loss_curves.png", "overfitting_gap.png",
        "scaling_curve.png"]
    page = Page((copy / "diagnostics.html").read_text(encoding="utf-8"))
    assert page.sections == ["run"] + [f"check-{c['name']}" for c in report["checks"]]
    assert main(["report", "--report-dir", str(copy)]) == 0
    assert "verdicts" in capsys.readouterr().out
