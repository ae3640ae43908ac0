//! `kiln plan --html`: the report is checked in a real headless browser (Debian's chromium,
//! driven through chromedriver's WebDriver API): the summary shows the plan's counts, each
//! rule's node has the colour of what the plan does to it, a click on a rule shows its diffs,
//! and no secret value is anywhere in the page. A screenshot is saved next to the test's
//! output (`target/tmp/plan-report.png`).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::realm::Realm;
use serde_json::{json, Value};

/// A chromedriver for the test's life.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/test installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{url}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, url }
    }

    fn call(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut response = match body {
            Some(b) => ureq::post(&url).send_json(b),
            None => ureq::get(&url).call(),
        }
        .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        response.body_mut().read_json::<Value>().unwrap()["value"].take()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_report_shows_the_plan_in_a_browser() {
    let r = Realm::new("report");
    r.rules(
        "\n[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\ndeps = [\"ns\", \"creds\"]\nnamespace = \"${var.ns}\"\n\n[rule.gone]\nkind = \"manifest\"\nsrcs = [\"gone.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"${var.ns}\"\n\n[rule.creds]\nkind = \"secret\"\nname = \"creds\"\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\ndata.password = { env = \"KILN_TEST_SECRET\" }\n",
    );
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {mode: blue}\n",
    );
    r.s.write(
        "gone.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone}\ndata: {a: \"1\"}\n",
    );
    r.apply(&[]);
    // Then: an update (app), a delete (gone's object, its rule removed), a new object.
    r.rules(
        "\n[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\ndeps = [\"ns\", \"creds\"]\nnamespace = \"${var.ns}\"\n\n[rule.extra]\nkind = \"manifest\"\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"extra\", namespace = \"${var.ns}\" } } ]\ndeps = [\"ns\"]\n\n[rule.creds]\nkind = \"secret\"\nname = \"creds\"\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\ndata.password = { env = \"KILN_TEST_SECRET\" }\n",
    );
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {mode: green}\n",
    );
    let report = r.s.dir.path().join("report.html");
    let out = r.kiln_env(
        "plan",
        &["--html", report.to_str().unwrap()],
        &[("KILN_TEST_SECRET", "hunter2-changed")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("hunter2"), "no secret value in the report");

    let driver = Driver::start();
    let session = driver.call(
        "/session",
        Some(json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"]}}}})),
    );
    let id = session["sessionId"].as_str().unwrap().to_owned();
    let s = |path: &str| format!("/session/{id}{path}");
    driver.call(
        &s("/url"),
        Some(json!({"url": format!("file://{}", report.display())})),
    );
    let exec = |script: &str| {
        driver.call(
            &s("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    };

    // The summary's counts.
    let counts = exec("return Object.fromEntries([...document.querySelectorAll('#summary .count')].map(e => [e.dataset.action, e.querySelector('b').textContent]))");
    assert_eq!(counts["create"], "1", "{counts}");
    // app's ConfigMap, and the Secret whose value changed.
    assert_eq!(counts["update"], "2", "{counts}");
    assert_eq!(counts["delete"], "1", "{counts}");
    // Nodes take the colour of their rule's worst action (computed by the browser).
    let fill = |rule: &str| {
        exec(&format!("return getComputedStyle(document.querySelector('.rule[data-rule=\"{rule}\"] rect')).fill"))
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(fill("app"), "rgb(255, 224, 138)", "update: yellow");
    assert_eq!(fill("extra"), "rgb(183, 228, 199)", "create: green");
    assert_eq!(fill("ns"), "rgb(255, 255, 255)", "unchanged: white");
    assert_eq!(
        fill("gone"),
        "rgb(244, 166, 166)",
        "a removed rule's objects are deleted: red"
    );
    // A click on a rule shows its objects and diffs.
    exec("document.querySelector('.rule[data-rule=\"app\"]').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null");
    let details = exec("return document.getElementById('details').innerText");
    let details = details.as_str().unwrap();
    assert!(
        details.contains("ConfigMap") && details.contains("app"),
        "{details}"
    );
    assert!(
        details.contains("-  mode: blue") && details.contains("+  mode: green"),
        "{details}"
    );
    // The Secret's change is named by key, never shown.
    exec("document.querySelector('.rule[data-rule=\"creds\"]').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null");
    let details = exec("return document.getElementById('details').innerText");
    let details = details.as_str().unwrap();
    assert!(
        details.contains("secret values changed: password"),
        "{details}"
    );
    assert!(!details.contains("hunter2"), "{details}");
    exec("document.querySelector('.rule[data-rule=\"app\"]').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null");
    let shot = driver.call(&s("/screenshot"), None);
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot.as_str().unwrap(),
    )
    .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot");
    // Kept for a look after the run: cargo's scratch directory for integration tests.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plan-report.png");
    std::fs::write(target, png).unwrap();
    let _ = ureq::delete(&format!("{}/session/{id}", driver.url)).call();
}
