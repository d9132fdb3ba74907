"""Saved views and the report render in headless Chromium with networking off.

Needs Debian's ``chromium`` (``.ci/install_chromium.sh``); skipped when it is not installed. The
DOM is dumped after the page's JavaScript ran, so the checks find elements that the circuitsvis
React components *created*, not text that merely sits in the page's source. A Chromium net log
records every request the page made: none may be http(s).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hlens.views import colored_scores, text_neuron_activations, topk_samples
from tests.test_report import make_run

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()),
    None,
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (run .ci/install_chromium.sh)"
    ),
]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing resolves: the network is off
    "--virtual-time-budget=5000",
]


#: Chromium's network-traffic annotation of requests made by web pages (``blink_resource_loader``);
#: the browser's own background requests (update checks, time sync) carry other annotations.
PAGE_TRAFFIC = 101845102


def _chromium(tmp: Path, page: Path, *extra: str) -> tuple[str, list[str]]:
    """Run Chromium on ``page``; returns (stdout, URLs of the requests the page made)."""
    log = tmp / "net.json"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={log}"]
    out = subprocess.run(
        [*cmd, *extra, page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert log.is_file(), "chromium wrote no net log"
    pat = rf'"traffic_annotation":{PAGE_TRAFFIC},"url":"([^"]+)"'
    return out.stdout, re.findall(pat, log.read_text())


def _rendered(dom: str) -> str:
    """The DOM without script and style elements: only what the page shows."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S | re.I)


def _assert_offline(html: str, urls: list[str]) -> None:
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html, re.I)
    fetched = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))]
    assert not fetched, fetched


def test_net_log_catches_page_requests(tmp_path):
    """The offline check is not vacuous: a page that fetches something is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<img src="http://example.invalid/x.png"><p>hi</p>')
    _, urls = _chromium(tmp_path, page, "--dump-dom")
    assert urls == ["http://example.invalid/x.png"]


def test_saved_views_render_tokens(tmp_path):
    view = colored_scores(["Zq", "uxt", "oken"], torch.tensor([-1.0, 0.2, 2.0]))
    toks = [["alpha", "Bravq"], ["Chrlx", "delta"]]
    view = view + text_neuron_activations(
        toks, torch.rand(2, 2, 2), ["L0.1", "L1.2"], labels=["faithful", "hallucinated"]
    )
    view = view + topk_samples(toks, torch.rand(2, 2, 2), ["L0.1", "L1.2"], k=2)
    page = view.save(tmp_path / "view.html")
    dom, urls = _chromium(tmp_path, page, "--dump-dom")
    shown = _rendered(dom)
    # spans made by circuitsvis's ColoredTokens, not the props in the script source
    assert re.search(
        r'class="colored-tokens".*?>Zq</span>.*?>uxt</span>.*?>oken</span>', shown, re.S
    )
    assert "Bravq" in shown and "Chrlx" in shown  # TextNeuronActivations / TopkSamples tokens
    assert "[hallucinated]" in shown
    assert shown.count('class="hlens-cv"') == 3
    _assert_offline(page.read_text(), urls)


def test_report_renders_offline(tmp_path):
    from hlens.report import write_report

    run = make_run(tmp_path / "run")
    page = write_report(run, views=False)
    dom, urls = _chromium(tmp_path, page, "--dump-dom")
    shown = _rendered(dom)
    assert "Quuxville" in shown  # a token rendered by TopkSamples from the explain cards
    assert re.search(r"<img [^>]*src=\"data:image/png;base64,", shown)
    for heading in ("hlens find", "hlens steer", "hlens explain", "hlens origin"):
        assert heading in shown
    _assert_offline(page.read_text(), urls)
    shot = tmp_path / "report.png"
    _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.is_file() and shot.stat().st_size > 10_000
