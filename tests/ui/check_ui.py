"""Opens a run's address in the MLflow UI in headless Chromium and checks what a person would see.

Debian's Chromium (/usr/bin/chromium) driven through Debian's chromedriver (/usr/bin/chromedriver)
with Selenium: nothing is downloaded (the driver's path is given, so Selenium Manager never runs)
and the browser resolves no host name, so it reaches nothing but the loopback server.

First the address as mltrack prints it (mlt_run_ui_url: the run's metric charts, in the "Model
training" view): it waits until the page's rendered text (innerText: what is laid out, not the
DOM's hidden parts, nor the REST API) shows the run name as a heading and, for each --chart key, a
chart card titled with the key that holds a drawn plot with the run's line in its legend, and that
the view is not the GenAI one (no "Evaluation runs"); it saves a full-page screenshot. Then, with
--overview-screenshot, the run's overview tab (the same address without "/model-metrics"): each
--param's key and value as cells of one table row, each --metric key as a cell and each --tag key
somewhere, and its screenshot. Then, with --image or --text, the run's Artifacts tab: it clicks
through the tree to the --image artifact and waits until its preview is drawn (an image loaded
from the server), then to the --text artifact and waits until its LINE is shown, with a screenshot
of each (--artifacts-screenshot). Exit status 0 when everything was seen, 1 otherwise (the message
names what is missing; the screenshots are saved either way), 2 when the browser cannot be started.

  python tests/ui/check_ui.py --url URL --run-name NAME [--chart KEY]... --screenshot FILE
                              [--param KEY=VALUE]... [--metric KEY]... [--tag KEY]...
                              [--overview-screenshot FILE] [--image PATH] [--text PATH=LINE]
                              [--artifacts-screenshot PREFIX] [--timeout SECONDS]
"""

import argparse
import base64
import os
import re
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1440, 1000)
MAX_HEIGHT = 8000  # a full-page screenshot is cut there

# The rendered text of the page's headings (the run page shows the run name as one) and of the rows
# of its tables (params, metrics), each row's cells separated by tabs or newlines.
HEADINGS_JS = """
return Array.from(document.querySelectorAll('h1, h2, h3, [role="heading"]'))
    .map(h => h.innerText.trim()).filter(t => t);
"""
ROWS_JS = """
return Array.from(document.querySelectorAll('tr, [role="row"]'))
    .map(r => r.innerText).filter(t => t && t.trim());
"""
# The metric chart cards: the title (the card's first line of text), whether a plot is drawn in
# it (Plotly's SVG), and the text of its legend.
CHARTS_JS = """
return Array.from(document.querySelectorAll('[data-testid="experiment-view-compare-runs-card"]'))
    .map(c => ({title: (c.innerText || '').split('\\n')[0].trim(),
                plotted: c.querySelectorAll('.js-plotly-plot svg.main-svg').length > 0,
                text: c.innerText || ''}));
"""

# Whether an image artifact is drawn: the preview's <img> (a blob: address) has loaded pixels.
IMAGE_JS = """
return Array.from(document.querySelectorAll('img'))
    .some(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0);
"""

# The height the page needs: the document's, or that of its tallest scrolling element (the MLflow
# UI keeps the document at the window's height and scrolls a content pane inside it).
HEIGHT_JS = """
let h = document.documentElement.scrollHeight;
for (const el of document.querySelectorAll('*')) {
    const extra = el.scrollHeight - el.clientHeight;
    if (extra > 1 && /(auto|scroll)/.test(getComputedStyle(el).overflowY)) {
        h = Math.max(h, window.innerHeight + extra);
    }
}
return h;
"""


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True,
                    help="the run's address as mltrack prints it: URI/#/experiments/E/runs/R/"
                         "model-metrics?workflowType=machine_learning")
    ap.add_argument("--run-name", required=True)
    ap.add_argument("--chart", action="append", default=[], metavar="KEY")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--metric", action="append", default=[], metavar="KEY")
    ap.add_argument("--tag", action="append", default=[], metavar="KEY")
    ap.add_argument("--screenshot", required=True, metavar="FILE")
    ap.add_argument("--overview-screenshot", metavar="FILE",
                    help="also check the params, metrics and tags on the overview tab")
    ap.add_argument("--image", metavar="PATH",
                    help="also open the run's Artifacts tab: this artifact (a PNG) is shown")
    ap.add_argument("--text", metavar="PATH=LINE",
                    help="...and this artifact (a text file) is shown with LINE in it")
    ap.add_argument("--artifacts-screenshot", metavar="PREFIX",
                    help="the Artifacts tab's screenshots: PREFIX-image.png, PREFIX-text.png")
    ap.add_argument("--timeout", type=float, default=90.0, help="for the page to show everything")
    args = ap.parse_args()
    for p in args.param:
        if "=" not in p:
            ap.error(f"--param {p!r}: want KEY=VALUE")
    return args


def start_browser(profile_dir):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # Chromium's sandbox cannot run as root
        "--disable-dev-shm-usage",  # containers have a small /dev/shm
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile_dir}",
        "--no-first-run",
        "--no-default-browser-check",
        # only the loopback server: no proxy, no name resolution, no background traffic
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-extensions",
        "--disable-sync",
        "--metrics-recording-only",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def missing_charts(driver, args):
    """What the printed address does not show yet: the run name, each chart with its plot."""
    text = driver.execute_script("return document.body ? document.body.innerText : '';") or ""
    headings = driver.execute_script(HEADINGS_JS) or []
    charts = driver.execute_script(CHARTS_JS) or []
    missing = []
    if args.run_name not in headings:
        missing.append(f"run name {args.run_name!r} (as a heading; headings: {headings})")
    for key in args.chart:
        card = [c for c in charts if c["title"] == key]
        if not card:
            missing.append(f"a chart titled {key!r} (charts: {[c['title'] for c in charts]})")
        elif not card[0]["plotted"]:
            missing.append(f"the plot of chart {key!r}")
        elif f"{args.run_name} ({key})" not in card[0]["text"]:
            missing.append(f"the line {args.run_name} ({key}) in the legend of chart {key!r}")
    if "Evaluation runs" in text:
        missing.append("the Model training view (the page is in the GenAI one)")
    return missing


def missing_items(driver, args):
    """What the overview does not show yet, as readable phrases ([] when everything is there)."""
    text = driver.execute_script("return document.body ? document.body.innerText : '';") or ""
    headings = driver.execute_script(HEADINGS_JS) or []
    rows = [
        [c.strip() for c in re.split(r"[\t\n]+", r)] for r in driver.execute_script(ROWS_JS) or []
    ]
    missing = []
    if args.run_name not in headings:
        missing.append(f"run name {args.run_name!r} (as a heading; headings: {headings})")
    for p in args.param:
        key, value = p.split("=", 1)
        if not any(key in cells and value in cells for cells in rows):
            missing.append(f"param {key!r} with value {value!r} (in one table row)")
    for key in args.metric:
        if not any(key in cells for cells in rows):
            missing.append(f"metric {key!r} (in a table row)")
    for key in args.tag:
        if key not in text:
            missing.append(f"tag {key!r}")
    return missing


def open_artifact(driver, path, timeout):
    """Clicks through the Artifacts tab's tree to path ("plots/loss.png"): False when a part
    of it never shows."""
    deadline = time.monotonic() + timeout
    for part in path.split("/"):
        while True:
            els = driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{part}']")
            if els:
                try:
                    els[-1].click()
                    break
                except WebDriverException:
                    pass  # not clickable yet: the tree is still being drawn
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        time.sleep(0.5)
    return True


def check_artifacts(driver, url, args):
    """The Artifacts tab: the image artifact drawn (an <img> of its size), the text artifact
    shown with its line. Returns what is missing; saves a screenshot of each."""
    missing = []
    tab = url.replace("/model-metrics", "/artifacts", 1)
    print(f"check_ui: opening {tab}")
    driver.get(tab)
    if args.image:
        drawn = False
        if open_artifact(driver, args.image, args.timeout):
            deadline = time.monotonic() + args.timeout
            while not drawn and time.monotonic() < deadline:
                drawn = bool(driver.execute_script(IMAGE_JS))
                time.sleep(0.5)
        if not drawn:
            missing.append(f"the image artifact {args.image!r}, drawn")
        if args.artifacts_screenshot:
            shot = args.artifacts_screenshot + "-image.png"
            full_page_screenshot(driver, shot)
            print(f"check_ui: screenshot: {os.path.abspath(shot)}")
    if args.text:
        path, line = args.text.split("=", 1)
        shown = False
        if open_artifact(driver, path, args.timeout):
            deadline = time.monotonic() + args.timeout
            while not shown and time.monotonic() < deadline:
                text = driver.execute_script("return document.body.innerText") or ""
                shown = line in text
                time.sleep(0.5)
        if not shown:
            missing.append(f"the text artifact {path!r} with the line {line!r}")
        if args.artifacts_screenshot:
            shot = args.artifacts_screenshot + "-text.png"
            full_page_screenshot(driver, shot)
            print(f"check_ui: screenshot: {os.path.abspath(shot)}")
    return missing


def full_page_screenshot(driver, path):
    """The whole page, not only the window: the window is made as tall as the content."""
    height = min(int(driver.execute_script(HEIGHT_JS) or WINDOW[1]), MAX_HEIGHT)
    if height > WINDOW[1]:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(1.0)  # let the page lay itself out at the new size
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    return height


def look(driver, url, missing_fn, args, screenshot):
    """Opens url, waits until missing_fn finds nothing (or the timeout), saves a screenshot.
    Returns (what is missing, the page title, the screenshot's height)."""
    print(f"check_ui: opening {url}")
    driver.get(url)
    deadline = time.monotonic() + args.timeout
    while True:
        missing = missing_fn(driver, args)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not missing:
        time.sleep(1.0)  # the charts and icons finish drawing after the text
    title = driver.title
    height = full_page_screenshot(driver, screenshot)
    print(f"check_ui: screenshot ({WINDOW[0]}x{height}): {os.path.abspath(screenshot)}")
    return missing, title


def main():
    args = parse_args()
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager never runs; belt and braces
    os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mltrack-ui-profile.") as profile:
        try:
            driver = start_browser(profile)
        except WebDriverException as e:
            print(f"check_ui: cannot start {CHROMIUM} through {CHROMEDRIVER}: {e.msg}",
                  file=sys.stderr)
            return 2
        try:
            driver.set_page_load_timeout(args.timeout)
            missing, title = look(driver, args.url, missing_charts, args, args.screenshot)
            if not missing:
                print(f"check_ui: the printed address ({title!r}) shows the run name "
                      f"{args.run_name!r} and the charts {', '.join(args.chart) or '(none asked)'}"
                      " in the Model training view")
            if not missing and args.overview_screenshot:
                overview = args.url.replace("/model-metrics", "", 1)
                missing, title = look(driver, overview, missing_items, args,
                                      args.overview_screenshot)
                if not missing:
                    print(f"check_ui: the overview ({title!r}) shows the params "
                          f"{', '.join(args.param) or '(none asked)'}, the metrics "
                          f"{', '.join(args.metric) or '(none asked)'} and the tags "
                          f"{', '.join(args.tag) or '(none asked)'}")
            if not missing and (args.image or args.text):
                missing = check_artifacts(driver, args.url, args)
                if not missing:
                    print(f"check_ui: the Artifacts tab draws {args.image or '(none asked)'} "
                          f"and shows {args.text or '(none asked)'}")
        finally:
            driver.quit()
    if missing:
        print(f"check_ui: FAIL: after {args.timeout:g} s the page ({title!r}) does not show: "
              + "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
