"""Drives the admin web UI in headless Chromium (Debian's chromium + chromium-driver).

Usage: web_ui.py BASE_URL ADMIN_TOKEN DATA_PLANE_URL CLIENT_TOKEN SCREENSHOT_DIR

Signs in, adds keys by paste, watches a revoked key turn invalid after validation,
disables a key, sends traffic through the data plane and finds the rate-limited key's
error in the logs, edits a route (with the API's validation message for a bad one), and
saves a screenshot of every page at desktop (1280x800) and phone (390x844) size. Any
failed check raises; the findings are printed as one JSON document for the Rust test.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, ADMIN_TOKEN, PLANE, CLIENT_TOKEN, SHOTS = sys.argv[1:6]
GOOD_1 = "sk-ui-good-00000000000000000001"
GOOD_2 = "sk-ui-good-00000000000000000002"
REVOKED = "sk-ui-revoked-000000000000000003"
BUSY = "sk-ui-busy-00000000000000000004"
SIZES = {"desktop": (1280, 800, False), "phone": (390, 844, True)}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,800",
    ):
        options.add_argument(arg)
    # The system driver, given explicitly: Selenium Manager never downloads anything.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


driver = start_browser()
wait = WebDriverWait(driver, 40, poll_frequency=0.2)
shots = []


def until(what, check, timeout=40):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        # A page being replaced (a form's answer loading, say) has the element missing
        # or stale for a moment: not yet, rather than a failure.
        except (NoSuchElementException, StaleElementReferenceException) as e:
            last = e
        time.sleep(0.2)
    body = driver.find_element(By.TAG_NAME, "body").text[:3000]
    raise AssertionError(
        f"timed out waiting for {what} (last: {last}) at {driver.current_url}; page text:\n{body}"
    )


def q(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def qa(css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def set_value(element, text):
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
        element,
        text,
    )


def metrics(width, height, mobile):
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def shot(name):
    for label, (width, height, mobile) in SIZES.items():
        metrics(width, height, mobile)
        time.sleep(0.4)
        file = f"{name}-{label}.png"
        assert driver.save_screenshot(os.path.join(SHOTS, file)), file
        shots.append(file)
    metrics(*SIZES["desktop"])
    time.sleep(0.2)


def page_errors():
    # The page reports failed API calls in the toast; none should be showing.
    toast = q("#toast")
    if "bad" in (toast.get_attribute("class") or ""):
        raise AssertionError("the page shows an error: " + toast.text)


def chat(n):
    statuses = []
    for _ in range(n):
        request = urllib.request.Request(
            PLANE + "/v1/chat/completions",
            data=json.dumps(
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            ).encode(),
            headers={
                "authorization": "Bearer " + CLIENT_TOKEN,
                "content-type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)
    return statuses


report = {}
try:
    metrics(*SIZES["desktop"])
    # === sign in ===
    driver.get(BASE + "/ui/keys")
    until("the redirect to the sign-in page", lambda: driver.current_url.endswith("/ui/login"))
    shot("login")
    q("#token").send_keys("fca_not-the-token")
    q("#sign-in").click()
    until("the wrong-token message", lambda: "invalid admin token" in q("#login-error").text)
    q("#token").send_keys(ADMIN_TOKEN)
    q("#sign-in").click()
    until("the dashboard", lambda: driver.current_url.endswith("/ui/"))
    cookie = driver.get_cookie("fulcrum_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert ADMIN_TOKEN not in cookie["value"]
    assert "fulcrum_session" not in driver.execute_script("return document.cookie")

    # === add keys by paste ===
    driver.get(BASE + "/ui/keys")
    until("the provider list", lambda: any(o.text == "openai" for o in Select(q("#paste-provider")).options))
    Select(q("#paste-provider")).select_by_visible_text("openai")
    if q("#paste-validate").is_selected():
        q("#paste-validate").click()
    set_value(q("#paste-keys"), "\n".join([GOOD_1, GOOD_2, REVOKED, BUSY, GOOD_1, "", "short"]))
    q("#paste-add").click()
    rows = until("the per-line results", lambda: len(qa("#paste-table tbody tr")) == 7 and qa("#paste-table tbody tr"))
    report["paste_outcomes"] = [r.get_attribute("data-outcome") for r in rows]
    ids = [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows]
    masked = [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows]
    assert all(secret not in driver.page_source for secret in (GOOD_1, GOOD_2, REVOKED, BUSY))
    good_1_id, good_2_id, revoked_id, busy_id = ids[:4]
    report.update(revoked_id=revoked_id, disabled_id=good_2_id, busy_id=busy_id)
    until("four active keys", lambda: len(qa('#keys-table tr[data-state="active"]')) == 4)
    assert q("#key-counts [data-state=active] .value").text == "4"
    page_errors()
    shot("keys")

    # === search and state filter ===
    set_value(q("#key-search"), revoked_id[:10])
    until("the search result", lambda: [r.get_attribute("data-id") for r in qa("#keys-table tbody tr[data-id]")] == [revoked_id])
    set_value(q("#key-search"), "")
    until("every key again", lambda: len(qa("#keys-table tbody tr[data-id]")) == 4)

    # === validate the revoked key: it turns invalid ===
    row = q(f'#keys-table tr[data-id="{revoked_id}"]')
    assert row.get_attribute("data-state") == "active"
    row.find_element(By.CSS_SELECTOR, 'button[data-action="validate"]').click()
    until("the revoked key to turn invalid", lambda: q(f'#keys-table tr[data-id="{revoked_id}"]').get_attribute("data-state") == "invalid")
    assert "invalid" in q(f'#keys-table tr[data-id="{revoked_id}"] td.state').text
    report["revoked_state"] = "invalid"

    # === disable one ===
    q(f'#keys-table tr[data-id="{good_2_id}"] button[data-action="disable"]').click()
    until("the key to show disabled", lambda: q(f'#keys-table tr[data-id="{good_2_id}"]').get_attribute("data-state") == "disabled")
    Select(q("#key-state")).select_by_value("disabled")
    until("the state filter", lambda: [r.get_attribute("data-id") for r in qa("#keys-table tbody tr[data-id]")] == [good_2_id])
    Select(q("#key-state")).select_by_value("")
    until("every key again", lambda: len(qa("#keys-table tbody tr[data-id]")) == 4)
    page_errors()

    # === traffic: the busy key answers 429 ===
    report["chat_statuses"] = chat(20)
    log("chat statuses", report["chat_statuses"])

    # === find the error in the logs ===
    driver.get(BASE + "/ui/logs")
    until("the logs page", lambda: qa("#logs-table"))
    set_value(q("#log-key"), busy_id)
    q("#log-errors").click()
    q("#log-attempts").click()
    set_value(q("#log-status"), "429")

    def error_rows():
        q("#log-search").click()
        time.sleep(0.5)
        return qa('#logs-table tbody tr[data-status="429"]')

    found = until("a 429 of the busy key in the logs", error_rows, timeout=60)
    report["error_status"] = found[0].get_attribute("data-status")
    shot("logs")
    qa('#logs-table tbody tr[data-status="429"]')[0].click()
    detail = until("the record's detail", lambda: qa("#log-detail") and q("#log-detail"))
    assert busy_id in detail.text, detail.text
    assert "rate_limited" in detail.text, detail.text
    shot("log-detail")
    # Live tail: new records appear without a search.
    q("#log-detail .close").click()
    set_value(q("#log-key"), "")
    set_value(q("#log-status"), "")
    q("#log-errors").click()
    q("#log-search").click()
    time.sleep(0.5)
    before = len(qa("#logs-table tbody tr[data-request]"))
    q("#log-tail").click()
    chat(3)
    until("tailed records", lambda: len(qa("#logs-table tbody tr[data-request]")) > before, timeout=60)

    # === key detail ===
    driver.get(BASE + "/ui/keys")
    until("the key table", lambda: qa(f'#keys-table tr[data-id="{busy_id}"]'))
    q(f'#keys-table tr[data-id="{busy_id}"] td.mono').click()
    until("the key detail", lambda: qa("#key-detail #history-table"))
    assert masked[3] in q("#key-detail").text
    shot("key-detail")

    # === dashboard: the busy key leads the 429s ===
    def dashboard_429():
        driver.get(BASE + "/ui/")
        until("the dashboard", lambda: qa("#dash-windows .card"))
        return busy_id in driver.find_element(By.TAG_NAME, "main").text

    until("the busy key among the most 429s", dashboard_429, timeout=60)
    assert q("#dash-chart svg") is not None
    page_errors()
    shot("dashboard")

    # === edit a route ===
    driver.get(BASE + "/ui/config")
    until("the config page", lambda: qa("#route-pattern"))
    # A provider: a bad name gets the API's message; editing one changes its weight.
    set_value(q("#provider-name"), "bad name!")
    q("#provider-save").click()
    report["provider_error"] = until("the provider validation message", lambda: q("#provider-error").text)
    q('#providers-table tr[data-provider="openai"] button[data-action="edit"]').click()
    assert q("#provider-name").get_attribute("value") == "openai"
    set_value(q("#provider-weight"), "3")
    q("#provider-save").click()
    until(
        "the provider's new weight",
        lambda: q('#providers-table tr[data-provider="openai"]').find_elements(By.TAG_NAME, "td")[4].text == "3",
    )

    set_value(q("#route-pattern"), "ui-model-*")
    set_value(q("#route-targets"), "nope")
    q("#route-save").click()
    message = until("the API's validation message", lambda: q("#route-error").text)
    assert "nope" in message, message
    report["route_error"] = message
    set_value(q("#route-targets"), "openai gpt-4o 1 1")
    q("#route-save").click()
    until("the new route", lambda: qa('#routes-table tr[data-pattern="ui-model-*"]'))
    assert "gpt-4o" in q('#routes-table tr[data-pattern="ui-model-*"] td.targets').text
    q('#routes-table tr[data-pattern="ui-model-*"] button[data-action="edit"]').click()
    assert q("#route-pattern").get_attribute("value") == "ui-model-*"
    set_value(q("#route-targets"), "openai gpt-4o-mini")
    q("#route-save").click()
    until(
        "the edited route",
        lambda: "gpt-4o-mini" in q('#routes-table tr[data-pattern="ui-model-*"] td.targets').text,
    )
    set_value(q("#explain-model"), "ui-model-x")
    q("#explain-go").click()
    until("the explain view", lambda: len(qa("#explain-table tbody tr")) >= 1)
    assert "ui-model-*" in q("#explain-result").text
    page_errors()
    shot("config")

    # === data planes ===
    driver.get(BASE + "/ui/planes")
    plane = until("the data plane", lambda: qa('#planes-table tr[data-node="dp-0"]') and q('#planes-table tr[data-node="dp-0"]'))
    report["plane_row"] = plane.text
    shot("planes")

    # === sign out ===
    q("#logout").click()
    until("the sign-in page", lambda: driver.current_url.endswith("/ui/login"))
    driver.get(BASE + "/ui/config")
    until("the redirect after sign-out", lambda: driver.current_url.endswith("/ui/login"))
    report["screenshots"] = shots
finally:
    driver.quit()

print(json.dumps(report))
