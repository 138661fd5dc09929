//! `faultline viz` in a real browser: the page for a canonical scenario's failing seed is
//! opened in headless Chromium through chromedriver (the W3C WebDriver HTTP protocol,
//! spoken by the small client below), and its DOM is compared with the trace.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! them the test fails under `CI` and is skipped, saying why, elsewhere. `FAULTLINE_CHROMIUM`
//! and `FAULTLINE_CHROMEDRIVER` override where they are looked for.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SCENARIO: &str = "scenarios/library/raft-figure8.toml";
const SEED: &str = "12";
const BUG: &str = "raft.ack_before_fsync";
/// A window around the first violation (at 2.855164s) holding a crash, restarts, drops
/// and a couple of hundred messages: under the page's drawing limit, so every element is
/// drawn one by one.
const FROM: &str = "2.5s";
const TO: &str = "2.95s";
const FROM_US: u64 = 2_500_000;
const TO_US: u64 = 2_950_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn faultline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("the binary runs")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The first of `candidates` that exists as a file, or is found on `PATH`.
fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in candidates {
        let direct = Path::new(name);
        if direct.is_absolute() && direct.is_file() {
            return Some(direct.to_path_buf());
        }
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium and chromedriver, or `None` (with the reason printed) when the test may skip.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(
        "FAULTLINE_CHROMIUM",
        &["chromium", "chromium-browser", "/usr/bin/chromium"],
    );
    let driver = find_program(
        "FAULTLINE_CHROMEDRIVER",
        &["chromedriver", "/usr/bin/chromedriver"],
    );
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => {
            let missing = format!(
                "{}{}",
                if c.is_none() { "chromium " } else { "" },
                if d.is_none() { "chromedriver" } else { "" }
            );
            assert!(
                !in_ci(),
                "the browser test needs {missing} under CI (apt-get install -y chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED: the browser test needs {missing} (apt-get install -y chromium chromium-driver)"
            );
            None
        }
    }
}

// ---- A minimal WebDriver client over HTTP/1.1 --------------------------------------------

/// The key under which WebDriver names an element (W3C WebDriver, "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    // chromedriver keeps the connection open whatever the request says: read the head,
    // then exactly the body its length announces (or chunks up to the last one).
    let mut response = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let split = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "the connection closed inside the head",
            ));
        }
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let mut payload = response[split + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked =
        head.contains("transfer-encoding: chunked") || head.contains("transfer-encoding:chunked");
    loop {
        let complete = match length {
            Some(len) => payload.len() >= len,
            None if chunked => payload.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload);
    }
    serde_json::from_slice(&payload).map_err(std::io::Error::other)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

impl Driver {
    fn start(chromium: &Path, chromedriver: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // Owned from here on: a panic below still stops chromedriver (see `Drop`).
        let mut driver = Driver {
            child,
            port,
            session: String::new(),
            _profile: tempfile::tempdir().expect("a profile directory"),
        };
        let started = Instant::now();
        loop {
            if let Ok(status) = http(port, "GET", "/status", None)
                && status["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not become ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1600,1000",
                    format!("--user-data-dir={}", driver._profile.path().display()),
                ]
            }
        }}});
        let created = driver.call("POST", "/session", Some(&capabilities));
        driver.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        driver
    }

    /// One WebDriver command; returns the whole response (`value` holds the result or
    /// the error).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        http(self.port, method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let response = self.call(method, &path, Some(&body));
        assert!(
            response["value"].get("error").is_none(),
            "WebDriver {method} {path}: {response}"
        );
        response["value"].clone()
    }

    fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Moves the pointer to the centre of `element` (a real hover).
    fn hover(&self, element: &str) {
        self.command(
            "POST",
            "/actions",
            json!({"actions": [{
                "type": "pointer",
                "id": "mouse",
                "parameters": {"pointerType": "mouse"},
                "actions": [{
                    "type": "pointerMove",
                    "duration": 0,
                    "origin": {ELEMENT_KEY: element},
                    "x": 0,
                    "y": 0
                }]
            }]}),
        );
    }

    /// A real click (WebDriver's element click: scroll into view, pointer at the centre,
    /// press, release); `Err` with the driver's error (e.g. another element on top).
    fn click(&self, element: &str) -> Result<(), String> {
        let path = format!("/session/{}/element/{element}/click", self.session);
        let response = self.call("POST", &path, Some(&json!({})));
        match response["value"].get("error") {
            None => Ok(()),
            Some(e) => Err(format!("{e}: {}", response["value"]["message"])),
        }
    }

    /// How many times the page has drawn the diagram.
    fn renders(&self) -> u64 {
        self.script("return +document.body.dataset.renders")
            .as_u64()
            .expect("a render count")
    }

    /// Waits until the page has drawn again since `before` renders.
    fn wait_for_render(&self, before: u64) {
        let started = Instant::now();
        while self.renders() <= before {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the page did not draw again"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn open(&self, page: &Path) {
        let url = format!("file://{}", page.display());
        self.command("POST", "/url", json!({ "url": url }));
        let started = Instant::now();
        while self.script("return document.body.dataset.firstRenderMs || null") == Value::Null {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the page did not render"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- The trace's own counts ----------------------------------------------------------------

struct TraceCounts {
    lines: Vec<String>,
    nodes: usize,
    delivers: usize,
    drops: usize,
    crashes: usize,
}

fn count(trace: &Path) -> TraceCounts {
    let text = std::fs::read_to_string(trace).expect("the trace");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut counts = TraceCounts {
        lines: Vec::new(),
        nodes: 0,
        delivers: 0,
        drops: 0,
        crashes: 0,
    };
    let mut highest = 0u64;
    for line in &lines {
        let e: Value = serde_json::from_str(line).expect("a JSON event");
        for key in ["node", "from", "to"] {
            if let Some(n) = e[key].as_u64() {
                highest = highest.max(n);
            }
        }
        let t = e["time"].as_u64().expect("a time");
        if !(FROM_US..=TO_US).contains(&t) {
            continue;
        }
        match e["event"].as_str() {
            Some("deliver") => counts.delivers += 1,
            Some("drop") => counts.drops += 1,
            Some("crash") => counts.crashes += 1,
            _ => {}
        }
    }
    counts.nodes = highest as usize + 1;
    counts.lines = lines;
    counts
}

#[test]
fn the_page_of_a_failing_raft_seed_matches_its_trace_in_chromium() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let trace = dir.path().join("trace.jsonl");
    let page = dir.path().join("page.html");
    let run = faultline(&[
        "run",
        SCENARIO,
        "--seed",
        SEED,
        "--bug",
        BUG,
        "--trace",
        trace.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.status.code(), Some(1), "the seed fails");
    let viz = faultline(&[
        "viz",
        SCENARIO,
        "--seed",
        SEED,
        "--bug",
        BUG,
        "--from",
        FROM,
        "--to",
        TO,
        "-o",
        page.to_str().expect("utf-8"),
    ]);
    let out = String::from_utf8_lossy(&viz.stdout);
    assert_eq!(
        viz.status.code(),
        Some(1),
        "viz reports the violation: {out}"
    );
    assert!(out.contains("leader_completeness"), "{out}");
    let expected = count(&trace);
    // The window is worth testing only if it holds every kind of mark.
    assert!(expected.delivers > 50 && expected.drops > 0 && expected.crashes > 0);

    let driver = Driver::start(&chromium, &chromedriver);
    driver.open(&page);
    let dom = driver.script(
        "return {
            lanes: document.querySelectorAll('#plot .lane').length,
            arrows: document.querySelectorAll('#plot .msg-arrow').length,
            drops: document.querySelectorAll('#plot .drop-mark').length,
            crashes: document.querySelectorAll('#plot .crash-mark').length,
            heat: document.querySelectorAll('#plot .heat').length,
            violations: document.querySelectorAll('#plot .violation-marker').length,
            cited: document.querySelectorAll('#plot .cited-mark').length,
            listed: document.querySelectorAll('#violations .violation').length,
            external: performance.getEntriesByType('resource').length
        };",
    );
    assert_eq!(dom["lanes"], json!(expected.nodes), "{dom}");
    assert_eq!(dom["arrows"], json!(expected.delivers), "{dom}");
    assert_eq!(dom["drops"], json!(expected.drops), "{dom}");
    assert_eq!(dom["crashes"], json!(expected.crashes), "{dom}");
    assert_eq!(dom["heat"], json!(0), "nothing aggregated: {dom}");
    assert!(dom["violations"].as_u64() >= Some(1), "{dom}");
    assert!(
        dom["cited"].as_u64() >= Some(1),
        "the cited events are marked: {dom}"
    );
    assert!(dom["listed"].as_u64() >= Some(1), "{dom}");
    assert_eq!(dom["external"], json!(0), "no network request: {dom}");

    // Click arrows (a real pointer click at the element's centre) until one is not
    // covered by another element, and read the details panel.
    let candidates = driver.script(
        "var box = document.getElementById('plot').getBoundingClientRect();
         return Array.from(document.querySelectorAll('#plot .msg-arrow')).filter(function (a) {
             var r = a.getBoundingClientRect();
             return r.left > box.left + 60 && r.right < box.right - 20 && r.height > 20;
         }).map(function (a) {
             return { j: a.dataset.j, y1: +a.getAttribute('y1'), y2: +a.getAttribute('y2') };
         });",
    );
    let candidates = candidates.as_array().expect("a list").clone();
    assert!(!candidates.is_empty());
    let lane_y = driver.script(
        "var out = {}; document.querySelectorAll('#plot .lane').forEach(function (g) {
             out[g.dataset.node] = +g.querySelector('line').getAttribute('y1'); }); return out;",
    );
    let mut clicked = None;
    let mut refusals = Vec::new();
    for c in candidates.iter().take(40) {
        let j = c["j"].as_str().expect("data-j");
        let element = driver.element(&format!("#plot .msg-arrow[data-j='{j}']"));
        match driver.click(&element) {
            Ok(()) => {
                clicked = Some(c.clone());
                break;
            }
            Err(e) => refusals.push(e),
        }
    }
    let clicked = clicked.unwrap_or_else(|| panic!("no arrow could be clicked: {refusals:?}"));
    let shown = driver.script(
        "var p = document.getElementById('details-json');
         var head = document.getElementById('details-head');
         return p && { json: p.textContent, head: head.textContent };",
    );
    let shown_json: Value = serde_json::from_str(shown["json"].as_str().expect("details"))
        .unwrap_or_else(|e| panic!("the details panel holds the event's JSON ({e}): {shown}"));
    // The panel shows the delivery the arrow draws: its trace line, verbatim, whose ends
    // are the arrow's lanes.
    let index: usize = shown["head"]
        .as_str()
        .and_then(|h| h.split("trace event #").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the details name the trace event: {shown}"));
    let line: Value = serde_json::from_str(&expected.lines[index]).expect("JSON");
    assert_eq!(shown_json, line);
    assert_eq!(line["event"], "deliver");
    let y_of = |node: &Value| lane_y[node.as_u64().expect("a node").to_string()].as_f64();
    assert_eq!(y_of(&line["from"]), clicked["y1"].as_f64(), "{line}");
    assert_eq!(y_of(&line["to"]), clicked["y2"].as_f64(), "{line}");
    assert!(
        shown["json"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("\"id\":{}", line["id"]))),
        "the message id is shown: {shown}"
    );

    // Hovering over a drop mark previews that drop's event.
    let drop_j = driver.script("return document.querySelector('#plot .drop-mark').dataset.j;");
    let drop = driver.element(&format!(
        "#plot .drop-mark[data-j='{}']",
        drop_j.as_str().expect("data-j")
    ));
    driver.hover(&drop);
    let tip = driver.script(
        "var t = document.getElementById('tooltip'); return { hidden: t.hidden, text: t.textContent };",
    );
    assert_eq!(tip["hidden"], json!(false), "{tip}");
    let tip_text = tip["text"].as_str().expect("text");
    let tip_line: Value = serde_json::from_str(tip_text.lines().nth(1).expect("the event line"))
        .unwrap_or_else(|e| panic!("the tooltip shows the event ({e}): {tip_text}"));
    assert_eq!(tip_line["event"], "drop", "{tip_text}");
    assert!(
        expected
            .lines
            .iter()
            .any(|l| serde_json::from_str::<Value>(l).ok() == Some(tip_line.clone())),
        "the tooltip's event is a line of the trace: {tip_text}"
    );

    // The node filter hides a lane (and every arrow that touches it).
    let filter = driver.element(".node-filter[data-node='0']");
    let before = driver.renders();
    driver.click(&filter).expect("the node filter is clickable");
    driver.wait_for_render(before);
    let after = driver.script(
        "return { lanes: document.querySelectorAll('#plot .lane').length,
                  arrows: document.querySelectorAll('#plot .msg-arrow').length };",
    );
    assert_eq!(after["lanes"], json!(expected.nodes - 1), "{after}");
    assert!(after["arrows"].as_u64() < dom["arrows"].as_u64(), "{after}");

    // The mouse wheel zooms in around the pointer; dragging pans.
    let range = || {
        let text = driver.script("return document.getElementById('view-range').textContent");
        let text = text.as_str().expect("the view range").to_string();
        let bounds: Vec<f64> = text
            .split(" – ")
            .map(|t| t.trim_end_matches('s').parse().expect("seconds"))
            .collect();
        (bounds[0], bounds[1])
    };
    let (lo, hi) = range();
    let plot = driver.element("#plot");
    let before = driver.renders();
    driver.command(
        "POST",
        "/actions",
        json!({"actions": [{"type": "wheel", "id": "wheel", "actions": [{
            "type": "scroll", "x": 0, "y": 0, "deltaX": 0, "deltaY": -400,
            "origin": {ELEMENT_KEY: plot}
        }]}]}),
    );
    driver.wait_for_render(before);
    let (zlo, zhi) = range();
    assert!(
        zhi - zlo < (hi - lo) * 0.8 && zlo >= lo && zhi <= hi,
        "zoomed in: {lo}..{hi} -> {zlo}..{zhi}"
    );
    let before = driver.renders();
    driver.command(
        "POST",
        "/actions",
        json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "duration": 0, "origin": {ELEMENT_KEY: plot}, "x": 0, "y": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "duration": 100, "origin": "pointer", "x": 200, "y": 0},
            {"type": "pointerUp", "button": 0}
        ]}]}),
    );
    driver.wait_for_render(before);
    let (plo, phi) = range();
    assert!(
        plo < zlo && ((phi - plo) - (zhi - zlo)).abs() < 1e-5,
        "dragging right shows earlier times at the same scale: {zlo}..{zhi} -> {plo}..{phi}"
    );
}

#[test]
fn a_whole_trace_is_drawn_as_density_until_zoomed_in() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let trace = dir.path().join("trace.jsonl");
    let page = dir.path().join("page.html");
    let p = |p: &Path| p.to_str().expect("utf-8").to_string();
    let run = faultline(&[
        "run",
        SCENARIO,
        "--seed",
        SEED,
        "--bug",
        BUG,
        "--trace",
        &p(&trace),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let viz = faultline(&[
        "viz",
        SCENARIO,
        "--seed",
        SEED,
        "--bug",
        BUG,
        "-o",
        &p(&page),
    ]);
    assert_eq!(viz.status.code(), Some(1));
    let delivers = std::fs::read_to_string(&trace)
        .expect("trace")
        .lines()
        .filter(|l| l.contains("\"event\":\"deliver\""))
        .count();
    assert!(delivers > 3_000, "more arrows than the page draws at once");

    let driver = Driver::start(&chromium, &chromedriver);
    driver.open(&page);
    let whole = driver.script(
        "return { arrows: document.querySelectorAll('#plot .msg-arrow').length,
                  heat: document.querySelectorAll('#plot .heat-msg').length,
                  note: document.getElementById('aggregate-note').textContent,
                  limits: document.getElementById('limits').textContent };",
    );
    assert_eq!(whole["arrows"], json!(0), "{whole}");
    assert!(whole["heat"].as_u64() > Some(0), "{whole}");
    let note = whole["note"].as_str().expect("note").replace(',', "");
    assert!(
        note.contains(&format!("{delivers} delivered messages")),
        "the note counts the aggregated arrows: {note}"
    );
    assert!(
        whole["limits"]
            .as_str()
            .is_some_and(|l| l.contains("3,000") && l.contains("250,000")),
        "{whole}"
    );

    // Zooming to the violation (a real click on the button) draws arrows one by one.
    let button = driver.element("#zoom-violation");
    let before = driver.renders();
    driver.click(&button).expect("the button is clickable");
    driver.wait_for_render(before);
    let zoomed = driver.script(
        "return { arrows: document.querySelectorAll('#plot .msg-arrow').length,
                  heat: document.querySelectorAll('#plot .heat-msg').length,
                  cited: document.querySelectorAll('#plot .cited-mark').length,
                  details: document.getElementById('details-head').textContent };",
    );
    assert!(zoomed["arrows"].as_u64() > Some(0), "{zoomed}");
    assert!(zoomed["arrows"].as_u64() <= Some(3_000), "{zoomed}");
    assert_eq!(zoomed["heat"], json!(0), "{zoomed}");
    // The view spans the violation and the application it cites, both circled.
    assert!(zoomed["cited"].as_u64() >= Some(2), "{zoomed}");
    assert!(
        zoomed["details"]
            .as_str()
            .is_some_and(|d| d.contains("leader_completeness")),
        "{zoomed}"
    );
}

/// Every kind of mark of a lossy broadcast run (duplicates, clogs, pauses, client
/// operations, observations) equals the trace's count in two windows.
#[test]
fn every_kind_of_mark_matches_the_trace_of_a_lossy_run() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    const LOSSY: &str = "scenarios/library/broadcast-lossy-partitions.toml";
    let dir = tempfile::tempdir().expect("a directory");
    let trace = dir.path().join("trace.jsonl");
    let p = |p: &Path| p.to_str().expect("utf-8").to_string();
    let run = faultline(&["run", LOSSY, "--seed", "7", "--trace", &p(&trace)]);
    assert_eq!(run.status.code(), Some(0));
    let events: Vec<Value> = std::fs::read_to_string(&trace)
        .expect("trace")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let driver = Driver::start(&chromium, &chromedriver);
    for (from, to, from_us, to_us) in [
        ("3s", "3.3s", 3_000_000u64, 3_300_000u64),
        ("6s", "6.3s", 6_000_000, 6_300_000),
    ] {
        let page = dir.path().join(format!("{from}.html"));
        let viz = faultline(&[
            "viz",
            LOSSY,
            "--seed",
            "7",
            "--from",
            from,
            "--to",
            to,
            "-o",
            &p(&page),
        ]);
        assert_eq!(viz.status.code(), Some(0));
        let window: Vec<&Value> = events
            .iter()
            .filter(|e| (from_us..=to_us).contains(&e["time"].as_u64().expect("time")))
            .collect();
        let count = |kind: &str| window.iter().filter(|e| e["event"] == kind).count();
        let mut ops: Vec<(u64, u64)> = window
            .iter()
            .filter(|e| e["event"] == "invoke" || e["event"] == "complete")
            .map(|e| {
                (
                    e["client"].as_u64().expect("client"),
                    e["op"].as_u64().expect("op"),
                )
            })
            .collect();
        ops.sort_unstable();
        ops.dedup();
        driver.open(&page);
        let dom = driver.script(
            "var n = function (css) { return document.querySelectorAll('#plot ' + css).length; };
             return { arrows: n('.msg-arrow'), drops: n('.drop-mark'), dups: n('.dup-mark'),
                      clogs: n('.clog-period'), pauses: n('.pause-mark'), resumes: n('.resume-mark'),
                      ops: n('.op-span'), obs: n('.obs-tick'), crashes: n('.crash-mark'),
                      disk: n('.disk-mark'), heat: n('.heat') };",
        );
        let expected = json!({
            "arrows": count("deliver"), "drops": count("drop"), "dups": count("duplicate"),
            "clogs": 2 * count("clog"), "pauses": count("pause"), "resumes": count("resume"),
            "ops": ops.len(), "obs": count("observe"), "crashes": count("crash"),
            "disk": count("disk"), "heat": 0,
        });
        assert_eq!(dom, expected, "window {from}..{to}");
        assert!(count("duplicate") > 0 && !ops.is_empty());
    }
}

/// Prints the page size and the time to first render of the pages named in
/// `FAULTLINE_VIZ_MEASURE` (comma-separated paths): `docs/viz.md` has the figures and
/// the commands. Run by hand: `cargo test -p faultline --test viz_browser -- --ignored`.
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_first_render() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let pages = std::env::var("FAULTLINE_VIZ_MEASURE").unwrap_or_default();
    let driver = Driver::start(&chromium, &chromedriver);
    for page in pages.split(',').filter(|p| !p.is_empty()) {
        let page = std::fs::canonicalize(page).expect("the page exists");
        let bytes = std::fs::metadata(&page).expect("size").len();
        for attempt in 1..=3 {
            driver.open(&page);
            let m = driver.script(
                "return { first: +document.body.dataset.firstRenderMs,
                          drawn: document.querySelectorAll('#plot *').length,
                          events: JSON.parse(document.getElementById('viz-meta').textContent).embedded_events };",
            );
            // One wheel step in the middle of the diagram: how long a redraw takes.
            let plot = driver.element("#plot");
            let before = driver.renders();
            driver.command(
                "POST",
                "/actions",
                json!({"actions": [{"type": "wheel", "id": "wheel", "actions": [{
                    "type": "scroll", "x": 0, "y": 0, "deltaX": 0, "deltaY": -200,
                    "origin": {ELEMENT_KEY: plot}
                }]}]}),
            );
            driver.wait_for_render(before);
            let redraw = driver.script("return +document.body.dataset.lastRenderMs");
            println!(
                "{}: {bytes} bytes, {} events, first render at {} ms (attempt {attempt}), {} SVG elements, a zoom redraws in {} ms",
                page.display(),
                m["events"],
                m["first"],
                m["drawn"],
                redraw
            );
        }
    }
}
