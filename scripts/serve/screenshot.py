"""screenshot.py: a PNG of the mo_serve page after it classified a photo, taken in headless Chromium over
chromedriver's W3C WebDriver HTTP API (Python standard library only; Debian's chromium + chromium-driver).

  python3 scripts/serve/screenshot.py --serve BUILD/tools/mo_serve --weights W --model NAME --photo IMG --out PNG

mo_serve and chromedriver listen on free ports; Chromium runs with --headless=new and a private profile; all of
them are ended when it returns, also on failure.
"""
import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

WAIT_S = 60  # against hangs only


def wait_for_line(proc, log, pattern):
    t0 = time.time()
    while time.time() - t0 < WAIT_S:
        with open(log, errors="replace") as f:
            m = re.search(pattern, f.read())
        if m:
            return m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(log, errors="replace") as f:
        sys.exit("%s did not start:\n%s" % (proc.args[0], f.read()))


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]
    except urllib.error.HTTPError as e:
        sys.exit("%s %s -> %d: %s" % (method, path, e.code, e.read().decode(errors="replace")))


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", required=True, help="the mo_serve binary")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--model", default="")
    ap.add_argument("--photo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="1100,800", help="window width,height")
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        sys.exit("chromium / chromedriver not found: apt-get install chromium chromium-driver")

    tmp = tempfile.mkdtemp(prefix="mo_serve_shot_")
    serve = chromedriver = None
    port = session = None
    try:
        cmd = [a.serve, "--weights", a.weights, "--port", "0", "--device", "cpu"] + (["--model", a.model] if a.model else [])
        log = os.path.join(tmp, "mo_serve.log")
        serve = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        url = "http://127.0.0.1:%s/" % wait_for_line(serve, log, r"http://127\.0\.0\.1:(\d+)/")

        log = os.path.join(tmp, "chromedriver.log")
        chromedriver = subprocess.Popen([driver, "--port=0"], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        port = int(wait_for_line(chromedriver, log, r"started successfully on port (\d+)"))
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=" + a.size, "--user-data-dir=" + os.path.join(tmp, "profile")]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        session = call(port, "POST", "/session", caps)["sessionId"]
        s = "/session/" + session
        call(port, "POST", s + "/url", {"url": url})
        # --window-size counts the (invisible) browser frame too: grow the window until the page itself,
        # and so the screenshot, is the size asked for
        w, h = (int(v) for v in a.size.split(","))
        inner = call(port, "POST", s + "/execute/sync", {"script": "return [innerWidth, innerHeight];", "args": []})
        rect = call(port, "GET", s + "/window/rect")
        call(port, "POST", s + "/window/rect", {"width": rect["width"] + w - inner[0],
                                                "height": rect["height"] + h - inner[1]})
        el = call(port, "POST", s + "/element", {"using": "css selector", "value": "#file"})
        call(port, "POST", s + "/element/%s/value" % list(el.values())[0], {"text": os.path.abspath(a.photo)})
        state = ""
        t0 = time.time()
        while time.time() - t0 < WAIT_S and state not in ("done", "error"):
            time.sleep(0.1)
            state = call(port, "POST", s + "/execute/sync", {"args": [], "script": """
              const r = document.getElementById('results'), p = document.getElementById('preview');
              return r.dataset.state === 'done' && !p.complete ? 'busy' : (r.dataset.state || '');"""})
        text = call(port, "POST", s + "/execute/sync", {"script": "return document.body.innerText;", "args": []})
        if state != "done":
            sys.exit("the page did not show a result (state '%s'):\n%s" % (state, text))
        png = base64.b64decode(call(port, "GET", s + "/screenshot"))
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            sys.exit("the screenshot is not a PNG")
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "wb") as f:
            f.write(png)
        print(text)
        print("wrote %s (%d bytes)" % (a.out, len(png)))
    finally:
        if session:
            try:
                call(port, "DELETE", "/session/" + session)
            except Exception as e:  # the browser may be gone already; chromedriver's group is ended below
                print("closing the session:", e, file=sys.stderr)
        stop(chromedriver)
        stop(serve)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
