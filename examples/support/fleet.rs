//! Several OS processes sharing one emulator quota, for `examples/fleet.rs` and the fleet
//! scenario of `benches/goodput.rs`: a redis-server on loopback, worker processes (the calling
//! executable again, told what to do through environment variables), and the merge of their
//! outcomes. Needs `load.rs` included beside it as `load`.
//!
//! It is example code, not part of the library API.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Region};
use bedrock_throttle::budget::{Quota, Settings};
use bedrock_throttle::sdk::BedrockThrottle;

use super::load;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A redis-server child process on a free loopback port, killed on drop.
pub struct Redis {
    pub url: String,
    child: Child,
}

impl Redis {
    pub fn start() -> Result<Self, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "redis-server not found ({e}): run ./scripts/test once (it installs it), \
                     or apt-get install -y redis-server"
                )
            })?;
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Redis { url, child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not start".into())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one worker process does.
#[derive(Debug, Clone)]
pub struct Worker {
    pub endpoint: String,
    /// `Some`: share the quota through this Redis, told the whole quota; `None`: told
    /// `tpm / workers` (the static split).
    pub redis: Option<String>,
    pub model: String,
    pub tpm: u64,
    pub window: Duration,
    pub windows: u32,
    pub demand: f64,
    pub mean_call_tokens: u64,
    pub index: usize,
    pub workers: usize,
    /// Worker 0's share of the calls, in percent (the others split the rest evenly); 0 = even.
    pub heavy_pct: u64,
    pub margin: Option<Duration>,
    /// The common start, in ms since the Unix epoch.
    pub start_ms: u64,
}

const VARS: [&str; 13] = [
    "FLEET_ENDPOINT",
    "FLEET_REDIS",
    "FLEET_MODEL",
    "FLEET_TPM",
    "FLEET_WINDOW_MS",
    "FLEET_WINDOWS",
    "FLEET_DEMAND",
    "FLEET_MEAN",
    "FLEET_INDEX",
    "FLEET_WORKERS",
    "FLEET_HEAVY",
    "FLEET_MARGIN_MS",
    "FLEET_START_MS",
];

impl Worker {
    /// The worker of this process, if it was started as one.
    pub fn from_env() -> Option<Worker> {
        let v = |name: &str| std::env::var(name).ok();
        let n = |name: &str| v(name).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        Some(Worker {
            endpoint: v("FLEET_ENDPOINT")?,
            redis: v("FLEET_REDIS").filter(|s| !s.is_empty()),
            model: v("FLEET_MODEL")?,
            tpm: n("FLEET_TPM"),
            window: Duration::from_millis(n("FLEET_WINDOW_MS")),
            windows: n("FLEET_WINDOWS") as u32,
            demand: v("FLEET_DEMAND")?.parse().ok()?,
            mean_call_tokens: n("FLEET_MEAN"),
            index: n("FLEET_INDEX") as usize,
            workers: n("FLEET_WORKERS") as usize,
            heavy_pct: n("FLEET_HEAVY"),
            margin: v("FLEET_MARGIN_MS")
                .and_then(|s| s.parse().ok())
                .map(Duration::from_millis),
            start_ms: n("FLEET_START_MS"),
        })
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let values = [
            self.endpoint.clone(),
            self.redis.clone().unwrap_or_default(),
            self.model.clone(),
            self.tpm.to_string(),
            self.window.as_millis().to_string(),
            self.windows.to_string(),
            self.demand.to_string(),
            self.mean_call_tokens.to_string(),
            self.index.to_string(),
            self.workers.to_string(),
            self.heavy_pct.to_string(),
            self.margin
                .map(|m| m.as_millis().to_string())
                .unwrap_or_default(),
            self.start_ms.to_string(),
        ];
        VARS.into_iter().zip(values).collect()
    }

    /// The worker that call `i` goes to.
    fn owner(&self, i: usize) -> usize {
        if self.heavy_pct == 0 || self.workers < 2 {
            return i % self.workers;
        }
        if (i as u64 * 7_919) % 100 < self.heavy_pct {
            0
        } else {
            1 + i % (self.workers - 1)
        }
    }

    /// Runs this worker's calls from the common start, and prints them as one `FLEET` line.
    pub async fn run(&self) -> Result<(), BoxError> {
        let told = match self.redis {
            Some(_) => self.tpm,
            None => self.tpm / self.workers as u64,
        };
        let mut settings = Settings::new()
            .window(self.window)
            .max_wait((self.window * 4 * self.windows).min(Duration::from_secs(240)));
        if let Some(margin) = self.margin {
            settings = settings.expiry_margin(margin);
        }
        let mut throttle = BedrockThrottle::builder()
            .quota(self.model.clone(), Quota::tokens(told))
            .settings(settings);
        if let Some(url) = &self.redis {
            throttle = throttle.redis(url.clone());
        }
        let throttle = throttle.build()?;
        if let bedrock_throttle::store::Store::Redis(store) = throttle.store() {
            store.ready().await?;
        }
        let base = aws_sdk_bedrockruntime::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("AK", "SK", None, None, "fleet"));
        let client = Client::from_conf(throttle.configure(base).build());
        let count = ((self.demand * (self.tpm * u64::from(self.windows)) as f64)
            / self.mean_call_tokens as f64)
            .round()
            .max(1.0) as usize;
        let all = load::mixed_calls(42, count, self.window * self.windows);
        let mine: Vec<(usize, load::Call)> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.owner(*i) == self.index)
            .collect();
        let calls: Vec<load::Call> = mine.iter().map(|(_, c)| c.clone()).collect();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        tokio::time::sleep(Duration::from_millis(self.start_ms.saturating_sub(now_ms))).await;
        let outcomes = load::run(&client, &self.model, &calls).await;
        let rows: Vec<serde_json::Value> = mine
            .iter()
            .zip(&outcomes)
            .map(|((i, _), o)| {
                serde_json::json!({
                    "i": i,
                    "sent": o.sent.as_secs_f64(),
                    "ended": o.ended.as_secs_f64(),
                    "ok": o.result.as_ref().ok(),
                    "err": o.result.as_ref().err(),
                })
            })
            .collect();
        println!("FLEET {}", serde_json::Value::Array(rows));
        Ok(())
    }
}

/// Starts `workers` copies of the current executable (with `args`) as workers of one run
/// that starts `lead` from now, waits for them, and returns every call's outcome in call order.
pub fn run_workers(
    template: &Worker,
    args: &[String],
    lead: Duration,
) -> Result<Vec<(usize, load::CallOutcome)>, BoxError> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe()?;
    let start_ms = (SystemTime::now().duration_since(UNIX_EPOCH)? + lead).as_millis() as u64;
    let mut children = Vec::new();
    for index in 0..template.workers {
        let w = Worker {
            index,
            start_ms,
            ..template.clone()
        };
        let child = Command::new(&exe)
            .args(args)
            .envs(w.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        children.push(child);
    }
    let mut outcomes = Vec::new();
    for mut child in children {
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let Some(json) = line.strip_prefix("FLEET ") else {
                continue;
            };
            let rows: Vec<serde_json::Value> = serde_json::from_str(json)?;
            for r in rows {
                let secs = |k: &str| Duration::from_secs_f64(r[k].as_f64().unwrap_or(0.0));
                let result = match r["ok"].as_array() {
                    Some(a) => Ok((a[0].as_u64().unwrap_or(0), a[1].as_u64().unwrap_or(0))),
                    None => Err(r["err"].as_str().unwrap_or("?").to_owned()),
                };
                outcomes.push((
                    r["i"].as_u64().unwrap_or(0) as usize,
                    load::CallOutcome {
                        sent: secs("sent"),
                        ended: secs("ended"),
                        result,
                    },
                ));
            }
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a worker process failed: {status}").into());
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(outcomes)
}
