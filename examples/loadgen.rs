//! A bounded load generator for `convcg serve`: `--clients` threads, each with its own
//! keep-alive connection, send `POST /v1/retrieve` for the users of `--users` in turn for
//! `--seconds`, then print the requests answered, the errors, the rate and the latency
//! percentiles.
//!
//! Without `--rate` each client sends its next request when the last is answered (closed loop:
//! the highest rate the server sustains with that many clients). With `--rate R` the clients
//! share a fixed schedule of R requests a second and each latency counts from the request's
//! scheduled time, so a server that falls behind is charged for the wait (open loop, no
//! coordinated omission).
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --users users.txt \
//!     --clients 4 --seconds 20 [--rate 2000] [--k 100] [--json]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Load generator for convcg serve")]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// User ids to ask for, one per line (as `convcg retrieve --users` reads them).
    #[arg(long)]
    users: PathBuf,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to send, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of requests sent first and not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Requests per second across all clients (default: closed loop, as fast as answered).
    #[arg(long)]
    rate: Option<f64>,
    /// Pins per request.
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// The surface of the requests.
    #[arg(long, default_value = "homefeed")]
    surface: String,
    /// Stop each client after this many counted requests (bounds the memory of the latencies).
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: usize,
    /// Print one line of JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One client's counted latencies (seconds) and errors.
#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

fn client(args: &Args, users: &[i64], c: usize, start: Instant) -> Tally {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}/v1/retrieve", args.url.trim_end_matches('/'));
    let counted_from = start + Duration::from_secs_f64(args.warmup);
    let end = counted_from + Duration::from_secs_f64(args.seconds);
    let mut tally = Tally::default();
    let mut i = 0usize;
    loop {
        // The i-th request of client c is the (c + i * clients)-th of the shared schedule.
        let slot = c + i * args.clients;
        let scheduled = match args.rate {
            Some(rate) => {
                let at = start + Duration::from_secs_f64(slot as f64 / rate);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                at
            }
            None => Instant::now(),
        };
        if scheduled >= end || tally.latencies.len() >= args.max_requests {
            break;
        }
        let user = users[slot % users.len()];
        let body = format!(
            r#"{{"user_id": {user}, "surface": "{}", "k": {}}}"#,
            args.surface, args.k
        );
        let outcome = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&body)
            .map_err(|e| e.to_string())
            .and_then(|mut r| {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}: {text}"))
                }
            });
        let done = Instant::now();
        if scheduled >= counted_from {
            match outcome {
                Ok(()) => tally.latencies.push((done - scheduled).as_secs_f64()),
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(e);
                }
            }
        }
        i += 1;
    }
    tally
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.seconds <= 0.0 || args.rate.is_some_and(|r| r <= 0.0) {
        bail!("--clients, --seconds and --rate must be positive");
    }
    let users = Arc::new(convcg::read_user_ids(&args.users)?);
    let args = Arc::new(args);
    let start = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            let (args, users) = (Arc::clone(&args), Arc::clone(&users));
            std::thread::spawn(move || client(&args, &users, c, start))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let Ok(t) = h.join() else {
            bail!("a client thread panicked");
        };
        latencies.extend(t.latencies);
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    latencies.sort_by(f64::total_cmp);
    let ms = |p: f64| percentile(&latencies, p) * 1e3;
    let qps = latencies.len() as f64 / args.seconds;
    let mode = match args.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".to_owned(),
    };
    if args.json {
        let line = serde_json::json!({
            "mode": mode, "clients": args.clients, "k": args.k, "seconds": args.seconds,
            "requests": latencies.len(), "errors": errors, "qps": qps,
            "p50_ms": ms(50.0), "p90_ms": ms(90.0), "p99_ms": ms(99.0), "p999_ms": ms(99.9),
            "max_ms": latencies.last().map_or(f64::NAN, |l| l * 1e3),
        });
        println!("{line}");
    } else {
        println!(
            "{mode}, {} clients, k = {}: {} requests in {} s, {errors} errors, {qps:.0} req/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            args.clients,
            args.k,
            latencies.len(),
            args.seconds,
            ms(50.0),
            ms(90.0),
            ms(99.0),
            ms(99.9),
            latencies.last().map_or(f64::NAN, |l| l * 1e3)
        );
    }
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
    }
    Ok(())
}
