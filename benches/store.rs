//! The cost of the Redis store: a no-wait admission's latency next to a `PING` round trip on
//! the same connection, the Redis commands per admission and per settlement and the server
//! time per admission, counted from `INFO commandstats`, and the admissions per second (and
//! per second of the server's CPU, from `INFO cpu`) of 16 clients at once.
//!
//! ```text
//! cargo bench --features redis --bench store        # starts its own redis-server on loopback
//! STORE_BENCH_URL=redis://127.0.0.1:6379 cargo bench --features redis --bench store
//! ```
//!
//! Not a criterion bench: the figures are percentiles of a network round trip and server-side
//! counters, measured over `STORE_BENCH_N` (default 20,000) sequential admissions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bedrock_throttle::budget::{QuotaStore, Settings};
use bedrock_throttle::store::RedisStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_server() -> Result<(String, Server), BoxError> {
    if let Ok(url) = std::env::var("STORE_BENCH_URL") {
        return Ok((url, Server(None)));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server not found ({e}): run ./scripts/test once, or apt-get install redis-server"))?;
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..200 {
        if redis::Client::open(url.as_str())?
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
        {
            return Ok((url, Server(Some(child))));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("redis-server did not start".into())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1e6
}

/// Server time (µs) spent in script calls, from INFO commandstats.
fn script_usec(c: &mut redis::Connection) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c)?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split([':', ','])
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum())
}

/// The server's CPU seconds (user + system), from INFO cpu.
fn server_cpu(c: &mut redis::Connection) -> Result<f64, BoxError> {
    let info: String = redis::cmd("INFO").arg("cpu").query(c)?;
    Ok(info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum())
}

/// Client-issued script calls (EVALSHA, EVAL, SCRIPT) and every command, from INFO.
fn commands(c: &mut redis::Connection) -> Result<(u64, u64), BoxError> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c)?;
    let (mut scripts, mut all) = (0, 0);
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let (name, stats) = rest.split_once(':').unwrap_or((rest, ""));
        let calls: u64 = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if name == "info" || name == "config|resetstat" {
            continue;
        }
        all += calls;
        if name == "evalsha" || name == "eval" || name.starts_with("script") {
            scripts += calls;
        }
    }
    Ok((scripts, all))
}

fn main() -> Result<(), BoxError> {
    let n: usize = std::env::var("STORE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (url, _server) = start_server()?;
    let mut admin = redis::Client::open(url.as_str())?.get_connection()?;
    let version: String = redis::cmd("INFO").arg("server").query(&mut admin)?;
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store: RedisStore<String> = RedisStore::builder(url.clone(), Settings::new().tokens(1_000_000_000_000).window(Duration::from_secs(1)))
            .timeout(Duration::from_secs(1))
            .build()?;
        store.ready().await?;
        let key = "bench".to_owned();
        // Warm up.
        for _ in 0..1_000 {
            store.acquire(key.clone(), 100).await?.settle(100);
            store.ping().await?;
        }
        let mut pings = Vec::with_capacity(n);
        let mut admissions = Vec::with_capacity(n);
        for _ in 0..n {
            pings.push(store.ping().await?);
            let t = Instant::now();
            let permit = store.acquire(key.clone(), 100).await?;
            admissions.push(t.elapsed());
            permit.settle(100);
        }
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut admin)?;
        for _ in 0..n {
            store.acquire(key.clone(), 100).await?.settle(100);
        }
        let (adm_scripts, adm_all) = commands(&mut admin)?;
        let adm_usec = script_usec(&mut admin)? as f64 / n as f64;
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut admin)?;
        let mut permits = Vec::with_capacity(n);
        for _ in 0..n {
            permits.push(store.acquire(key.clone(), 100).await?);
        }
        let (before, _) = commands(&mut admin)?;
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut admin)?;
        let half = n / 2;
        for (i, p) in permits.into_iter().enumerate() {
            // Half refund, half debt: each one script call, sent in the background.
            p.settle(if i < half { 40 } else { 160 });
        }
        // Let the background settlements land (or be counted as lost).
        for _ in 0..100 {
            let (landed, _) = commands(&mut admin)?;
            let h = store.store_stats();
            if landed + h.lost_updates + h.unconfirmed >= n as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lost = store.store_stats().lost_updates;
        let (set_scripts, set_all) = commands(&mut admin)?;
        let _ = before;
        // Throughput: many clients (own connections) at once on one key, for two seconds;
        // admissions per second of the server's CPU.
        let clients: Vec<RedisStore<String>> = (0..16)
            .map(|_| {
                RedisStore::builder(url.clone(), Settings::new().tokens(1_000_000_000_000).window(Duration::from_secs(1)))
                    .timeout(Duration::from_secs(1))
                    .build()
            })
            .collect::<Result<_, _>>()?;
        let cpu0 = server_cpu(&mut admin)?;
        let start = Instant::now();
        let until = start + Duration::from_secs(2);
        let counts = futures_util::future::join_all(clients.iter().map(|c| {
            let key = key.clone();
            async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    if let Ok(p) = c.acquire(key.clone(), 100).await {
                        p.settle(100);
                        done += 1;
                    }
                }
                done
            }
        }))
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = server_cpu(&mut admin)? - cpu0;
        let total: u64 = counts.iter().sum();
        let p50_ping = pct(&mut pings, 0.50);
        let p99_ping = pct(&mut pings, 0.99);
        let p50 = pct(&mut admissions, 0.50);
        let p99 = pct(&mut admissions, 0.99);
        println!("Redis {version} on loopback, {n} sequential operations on one connection ({lost} settlements lost)\n");
        println!("| operation | p50 µs | p99 µs | p50 ÷ PING p50 |");
        println!("|---|--:|--:|--:|");
        println!("| PING | {p50_ping:.1} | {p99_ping:.1} | 1.00 |");
        println!(
            "| no-wait admission | {p50:.1} | {p99:.1} | {:.2} |",
            p50 / p50_ping
        );
        println!("\n| per | client commands (EVALSHA) | server commands incl. inside the script |");
        println!("|---|--:|--:|");
        println!(
            "| no-wait admission settled at its reservation | {:.3} | {:.1} |",
            adm_scripts as f64 / n as f64,
            adm_all as f64 / n as f64
        );
        println!(
            "| settlement with a refund or a debt | {:.3} | {:.1} |",
            set_scripts as f64 / n as f64,
            set_all as f64 / n as f64
        );
        println!("\n| server time per no-wait admission (commandstats) | admissions/s, 16 clients, one key | server CPU s | admissions per server CPU second |");
        println!("|--:|--:|--:|--:|");
        println!(
            "| {adm_usec:.1} µs | {:.0} | {cpu:.2} | {:.0} |",
            total as f64 / elapsed,
            total as f64 / cpu.max(1e-9)
        );
        Ok::<_, BoxError>(())
    })?;
    Ok(())
}
