//! `convcg serve` end to end: a tiny trained run served on a free loopback port answers valid,
//! cold-start and malformed requests (answers identical to `convcg retrieve`, errors naming the
//! field), swaps in a second run mid-traffic without a failed request, reloads on SIGHUP, and
//! stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TINY_WORLD, convcg, succeed};

const TOKEN: &str = "test-admin-token";

fn train(dir: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    let text = format!(
        "seed = {seed}\nthreads = 2\n{TINY_WORLD}\n[train]\nbatch_size = 32\nepochs = 1.0\n"
    );
    std::fs::write(&cfg, text).unwrap();
    let run_dir = dir.join(name);
    succeed(
        convcg()
            .args(["train", "--quiet", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&run_dir),
    );
    run_dir
}

/// A running `convcg serve`, killed if the test panics.
struct Server {
    child: Child,
    base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start(run_dir: &Path) -> Server {
        Server::start_with(run_dir, &[])
    }

    fn start_with(run_dir: &Path, extra: &[&str]) -> Server {
        let mut child = convcg()
            .arg("serve")
            .arg(run_dir)
            .args(["--addr", "127.0.0.1:0", "--max-k", "200"])
            .args(extra)
            .env("CONVCG_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).unwrap();
            s
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .to_owned();
        Server {
            child,
            base,
            stderr: Some(stderr),
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn new_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status and JSON (or text) body of a POST.
fn post(agent: &ureq::Agent, url: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent.post(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut resp = req.send(body).unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

fn retrieve(agent: &ureq::Agent, base: &str, body: Value) -> Value {
    let (status, text) = post(
        agent,
        &format!("{base}/v1/retrieve"),
        &body.to_string(),
        None,
    );
    assert_eq!(status, 200, "{body}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn pin_ids(answer: &Value) -> Vec<i64> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pin_id"].as_i64().unwrap())
        .collect()
}

/// `convcg retrieve`'s pin ids and scores for one user.
fn cli_retrieve(run_dir: &Path, user: i64, k: usize, extra: &[&str]) -> Vec<(i64, f32)> {
    let list = run_dir.join("serve-test-users.txt");
    std::fs::write(&list, format!("{user}\n")).unwrap();
    let out = succeed(
        convcg()
            .arg("retrieve")
            .arg(run_dir)
            .arg("--users")
            .arg(&list)
            .args(["--k", &k.to_string()])
            .args(extra),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// The `kind` and `field` of an error answer, after checking its status.
fn error_of(status: u16, text: &str, want_status: u16) -> (String, Value) {
    assert_eq!(status, want_status, "{text}");
    let v: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (
        v["error"]["kind"].as_str().unwrap().to_owned(),
        v["error"]["field"].clone(),
    )
}

#[test]
fn serve_answers_as_retrieve_does_refuses_bad_requests_and_reloads_without_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let run_a = train(dir.path(), "a", 5);
    let run_b = train(dir.path(), "b", 6);
    let server = Server::start(&run_a);
    let base = server.base.clone();
    let agent = new_agent();

    // Known users on every surface: the same pins and scores as `convcg retrieve`.
    let users: Vec<i64> = {
        succeed(
            convcg()
                .arg("embed")
                .arg("--quiet")
                .arg(&run_a)
                .arg("--out")
                .arg(dir.path().join("emb")),
        );
        let mut ids = Vec::new();
        let bytes = std::fs::read(dir.path().join("emb/user_ids.npy")).unwrap();
        let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
        for c in bytes[header..].chunks_exact(8).take(3) {
            ids.push(i64::from_le_bytes(c.try_into().unwrap()));
        }
        ids
    };
    let pins_a = cli_retrieve(&run_a, users[0], 30, &[]);
    let some_pin = pins_a[7].0;
    for &user in &users {
        for (surface, extra, body_extra) in [
            ("homefeed", vec![], json!({})),
            (
                "related",
                vec!["--context-pin".to_owned(), some_pin.to_string()],
                json!({"context_pin_id": some_pin}),
            ),
            (
                "search",
                vec!["--query".to_owned(), "3".to_owned()],
                json!({"query_id": 3}),
            ),
        ] {
            let mut body = json!({"user_id": user, "surface": surface, "k": 20});
            body.as_object_mut()
                .unwrap()
                .extend(body_extra.as_object().unwrap().clone());
            let answer = retrieve(&agent, &base, body);
            let mut args = vec!["--surface".to_owned(), surface.to_owned()];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let cli = cli_retrieve(&run_a, user, 20, &args);
            assert_eq!(
                pin_ids(&answer),
                cli.iter().map(|c| c.0).collect::<Vec<_>>(),
                "user {user} on {surface}"
            );
            for (item, (_, score)) in answer["items"].as_array().unwrap().iter().zip(&cli) {
                assert!((item["score"].as_f64().unwrap() as f32 - score).abs() < 1e-5);
                assert!(item["advertiser_id"].is_i64());
            }
            assert_eq!(answer["cold_start"]["user"], false);
        }
    }
    // Excluded pins are left out; the rest keep their order.
    let top = pin_ids(&retrieve(
        &agent,
        &base,
        json!({"user_id": users[0], "surface": "homefeed", "k": 10}),
    ));
    let without = pin_ids(&retrieve(
        &agent,
        &base,
        json!({"user_id": users[0], "surface": "homefeed", "k": 9, "exclude_pin_ids": [top[0], top[4]]}),
    ));
    let expected: Vec<i64> = top
        .iter()
        .copied()
        .filter(|p| *p != top[0] && *p != top[4])
        .chain(
            pin_ids(&retrieve(
                &agent,
                &base,
                json!({"user_id": users[0], "surface": "homefeed", "k": 11}),
            ))[10..]
                .iter()
                .copied(),
        )
        .collect();
    assert_eq!(without, expected);

    // Cold starts: a new user, an unknown context pin, recent pins given by the request.
    let cold = retrieve(
        &agent,
        &base,
        json!({"user_id": 987_654_321, "surface": "related", "context_pin_id": -5, "k": 15}),
    );
    assert_eq!(pin_ids(&cold).len(), 15);
    assert_eq!(cold["cold_start"]["user"], true);
    assert_eq!(cold["cold_start"]["context_pin"], true);
    let given = retrieve(
        &agent,
        &base,
        json!({"user_id": 987_654_321, "surface": "homefeed", "recent_pin_ids": [some_pin, -1], "k": 15}),
    );
    assert_eq!(given["cold_start"]["unknown_recent_pins"], 1);
    assert_ne!(
        pin_ids(&given),
        pin_ids(&cold),
        "the given engagements count"
    );

    // Malformed requests: a 4xx JSON error that names the field.
    let url = format!("{base}/v1/retrieve");
    for (body, status, kind, field) in [
        ("{not json", 400, "malformed_json", Value::Null),
        (
            r#"{"surface": "homefeed"}"#,
            400,
            "invalid_field",
            json!("user_id"),
        ),
        (
            r#"{"user_id": 1, "surface": "moon"}"#,
            400,
            "invalid_field",
            json!("surface"),
        ),
        (
            r#"{"user_id": 1, "surface": "homefeed", "k": 0}"#,
            400,
            "invalid_field",
            json!("k"),
        ),
        (
            r#"{"user_id": 1, "surface": "homefeed", "k": 201}"#,
            400,
            "invalid_field",
            json!("k"),
        ),
        (
            r#"{"user_id": 1, "surface": "homefeed", "k": -3}"#,
            400,
            "invalid_field",
            json!("k"),
        ),
        (
            r#"{"user_id": "x", "surface": "homefeed"}"#,
            400,
            "invalid_field",
            json!("user_id"),
        ),
        (
            r#"{"user_id": 1, "surface": "homefeed", "recent_pin_ids": [1, "two"]}"#,
            400,
            "invalid_field",
            json!("recent_pin_ids[1]"),
        ),
        (
            r#"{"user_id": 1, "surface": "homefeed", "colour": 1}"#,
            400,
            "invalid_field",
            json!("colour"),
        ),
        (
            r#"{"user_id": 1, "surface": "homefeed"} trailing"#,
            400,
            "malformed_json",
            Value::Null,
        ),
    ] {
        let (s, text) = post(&agent, &url, body, None);
        let (k, f) = error_of(s, &text, status);
        assert_eq!(k, kind, "{body}: {text}");
        assert_eq!(f, field, "{body}: {text}");
    }
    let long: Vec<i64> = (0..1001).collect();
    let body = json!({"user_id": 1, "surface": "homefeed", "exclude_pin_ids": long}).to_string();
    let (s, text) = post(&agent, &url, &body, None);
    assert_eq!(error_of(s, &text, 400).1, json!("exclude_pin_ids"));
    let huge = format!(
        r#"{{"user_id": 1, "surface": "homefeed", "pad": "{}"}}"#,
        "x".repeat(100_000)
    );
    let (s, text) = post(&agent, &url, &huge, None);
    assert_eq!(error_of(s, &text, 413).0, "body_too_large");
    let (s, text) = get(&agent, &url);
    assert_eq!(error_of(s, &text, 405).0, "method_not_allowed");
    let (s, text) = get(&agent, &format!("{base}/v2/nothing"));
    assert_eq!(error_of(s, &text, 404).0, "not_found");

    // Health and metrics.
    let (s, health) = get(&agent, &format!("{base}/healthz"));
    assert_eq!(s, 200);
    let model_a = serde_json::from_str::<Value>(&health).unwrap()["model"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(model_a.starts_with("a@"), "{model_a}");
    let (s, metrics) = get(&agent, &format!("{base}/metrics"));
    assert_eq!(s, 200);
    for want in [
        "convcg_requests_total{endpoint=\"retrieve\",status=\"200\"}",
        "convcg_request_errors_total{kind=\"malformed_json\"} 2",
        "convcg_retrieve_latency_seconds_bucket",
        "convcg_index_pins 1500",
        &format!("convcg_model_info{{version=\"{model_a}\",index=\"exact\"}} 1"),
    ] {
        assert!(metrics.contains(want), "no {want} in\n{metrics}");
    }

    // Admin: refused without the token; a reload under traffic fails no request.
    let reload_url = format!("{base}/admin/reload");
    let swap = json!({"run_dir": run_b}).to_string();
    let (s, text) = post(&agent, &reload_url, &swap, None);
    assert_eq!(error_of(s, &text, 401).0, "unauthorized");
    let (s, text) = post(&agent, &reload_url, &swap, Some("wrong"));
    assert_eq!(error_of(s, &text, 401).0, "unauthorized");
    let (s, text) = post(
        &agent,
        &reload_url,
        r#"{"run_dir": "/no/such/run"}"#,
        Some(TOKEN),
    );
    assert_eq!(error_of(s, &text, 422).0, "reload_failed");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (stop, base, user) = (Arc::clone(&stop), base.clone(), users[c % users.len()]);
            std::thread::spawn(move || {
                let agent = new_agent();
                let mut models = Vec::new();
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                    let body = json!({"user_id": user, "surface": "homefeed", "k": 50});
                    let (status, text) = post(
                        &agent,
                        &format!("{base}/v1/retrieve"),
                        &body.to_string(),
                        None,
                    );
                    assert_eq!(status, 200, "a request failed during the reload: {text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(pin_ids(&v).len(), 50);
                    models.push(v["model"].as_str().unwrap().to_owned());
                }
                models
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (s, text) = post(&agent, &reload_url, &swap, Some(TOKEN));
    assert_eq!(s, 200, "{text}");
    let model_b = serde_json::from_str::<Value>(&text).unwrap()["model"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(model_b.starts_with("b@"), "{model_b}");
    assert_ne!(
        model_a[2..],
        model_b[2..],
        "versions name the models' contents"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for c in clients {
        let models = c.join().expect("no client saw a failed request");
        assert!(!models.is_empty());
        assert!(models.iter().all(|m| *m == model_a || *m == model_b));
        assert_eq!(
            models.last(),
            Some(&model_b),
            "the swap reaches every client"
        );
        seen.extend(models);
    }
    assert!(seen.contains(&model_a) && seen.contains(&model_b));
    let b_answer = retrieve(
        &agent,
        &base,
        json!({"user_id": users[0], "surface": "homefeed", "k": 20}),
    );
    let cli_b = cli_retrieve(&run_b, users[0], 20, &[]);
    assert_eq!(
        pin_ids(&b_answer),
        cli_b.iter().map(|c| c.0).collect::<Vec<_>>()
    );

    // SIGHUP reloads the current run directory; SIGTERM stops the server cleanly.
    server.signal("HUP");
    let t0 = Instant::now();
    loop {
        let (_, m) = get(&agent, &format!("{base}/metrics"));
        if m.contains("convcg_reloads_total{outcome=\"ok\"} 2") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no reload on SIGHUP:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut server = server;
    server.signal("TERM");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let log = server.stderr.take().unwrap().join().unwrap();
    assert!(log.contains("stopped"), "{log}");
}

/// The approximate index serves nearly the exact lists, with exact inner-product scores, and
/// says so in its metrics. The graph is built by several threads, so it differs from run to run;
/// a wide search (ef 256 over 1,500 pins) keeps recall well clear of the threshold whatever the
/// graph.
#[test]
fn serve_with_the_hnsw_index_finds_nearly_the_exact_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "a", 5);
    let server = Server::start_with(&run, &["--index", "hnsw", "--ef-search", "256"]);
    let agent = new_agent();
    let (mut found, mut asked) = (0, 0);
    for user in (1_000_000..1_000_400).step_by(40) {
        let answer = retrieve(
            &agent,
            &server.base,
            json!({"user_id": user, "surface": "homefeed", "k": 50}),
        );
        let exact = cli_retrieve(&run, user, 50, &[]);
        let approx = pin_ids(&answer);
        assert_eq!(approx.len(), 50);
        found += exact.iter().filter(|(p, _)| approx.contains(p)).count();
        asked += exact.len();
        for item in answer["items"].as_array().unwrap() {
            let pin = item["pin_id"].as_i64().unwrap();
            if let Some((_, score)) = exact.iter().find(|(p, _)| *p == pin) {
                assert!((item["score"].as_f64().unwrap() as f32 - score).abs() < 1e-5);
            }
        }
    }
    let recall = found as f64 / asked as f64;
    assert!(recall >= 0.95, "recall@50 of the HNSW index {recall}");
    let (_, metrics) = get(&agent, &format!("{}/metrics", server.base));
    assert!(metrics.contains("index=\"hnsw\"} 1"), "{metrics}");
}
