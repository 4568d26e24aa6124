//! `bedrock-emulator`: a local Amazon Bedrock Runtime that enforces quotas with the real wire
//! format. See `bedrock_throttle::emulator` for what it does; `--help` for the options.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use bedrock_throttle::emulator::{Emulator, EmulatorConfig, Fault, OutputLength};

const HELP: &str = "\
bedrock-emulator: a local Amazon Bedrock Runtime that enforces quotas with the real wire format

USAGE:
    bedrock-emulator [OPTIONS]

OPTIONS:
    --listen ADDR              address to bind [default: 127.0.0.1:0]
    --config FILE.json         JSON configuration (options below override it)
    --rpm N                    default requests per window
    --tpm N                    default tokens per window
    --tpd N                    default tokens per day (1440 windows)
    --window-secs S            window length in seconds, fractions allowed [default: 60]
    --enforcement E            sliding | token-bucket | fixed [default: sliding]
    --output-tokens N|MIN..MAX generated output tokens [default: 32]
    --ttft-ms MS               time to first token in milliseconds [default: 0]
    --tokens-per-second N      generation speed [default: instantaneous]
    --fault FAULT=P            inject FAULT with probability P (repeatable)
    --fault-at INDEX=FAULT     inject FAULT into inference request INDEX (repeatable)
    --strict-models            refuse model ids the emulator does not know, as Bedrock does
                               (WITHOUT it, ANY model id is served, even a misspelt one)
    --max-connections N        connections served at once [default: 4096]
    --max-in-flight N          requests read, validated or answered at once [default: 1024]
    --header-read-timeout-ms MS  time a client may take to send its headers [default: 30000]
    --retry-after              send x-amz-retry-after on throttles
    --burndown PATTERN=N       settle the output of models PATTERN names (an id, or `*`/`?`
                               matching a table row) at N instead of the table's (repeatable)
    --model-table FILE.json    take families, maximums and burndowns from this table
    --account-tpd N            account-wide tokens per day across models (0 refuses all)
    --mantle MODEL=IN,OUT      bedrock-mantle input and output tokens per window for MODEL
                               on /v1/chat/completions and /v1/responses (repeatable)
    --seed N                   seed of the generators [default: 0]
    -h, --help                 print this help
    -V, --version              print the version

FAULTS:
    service-unavailable, too-many-connections, internal-server, model-timeout,
    model-not-ready, model-error, access-denied, service-quota-exceeded, overloaded
    (HTTP 529), overloaded@<seconds> (529 with Retry-After), stream:<exception>@<events> with <exception> one of throttling, service-unavailable,
    internal-server, model-stream-error, model-timeout, validation. A fault is injected
    only into operations whose Bedrock model defines it (service-quota-exceeded: InvokeModel
    and InvokeModelWithResponseStream; stream:model-timeout: InvokeModelWithResponseStream);
    other operations answer normally.

The first line on stdout is `listening on http://ADDR`. Stats: GET /_emulator/stats.
SIGINT or SIGTERM shut it down gracefully.
";

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bedrock-emulator: {message}\nTry `bedrock-emulator --help`.");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bedrock-emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: EmulatorConfig) -> ExitCode {
    // Handlers first: a supervisor may signal as soon as it has read the first line.
    let signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bedrock-emulator: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match Emulator::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("bedrock-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let printed =
        writeln!(stdout, "listening on {}", handle.endpoint_url()).and_then(|()| stdout.flush());
    drop(stdout);
    if printed.is_err() {
        // Nobody reads stdout any more; keep serving anyway.
        eprintln!("listening on {}", handle.endpoint_url());
    }
    signals.recv().await;
    eprintln!("bedrock-emulator: shutting down");
    handle.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn recv(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses the arguments; `Ok(None)` when `--help` or `--version` was answered.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<EmulatorConfig>, String> {
    let mut args = args.into_iter();
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    let mut config_file = None;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("bedrock-emulator {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--strict-models" | "--retry-after" => options.push((name, None)),
            "--listen"
            | "--config"
            | "--rpm"
            | "--tpm"
            | "--tpd"
            | "--window-secs"
            | "--enforcement"
            | "--output-tokens"
            | "--ttft-ms"
            | "--tokens-per-second"
            | "--fault"
            | "--fault-at"
            | "--seed"
            | "--max-connections"
            | "--max-in-flight"
            | "--header-read-timeout-ms"
            | "--burndown"
            | "--model-table"
            | "--account-tpd"
            | "--mantle" => {
                let value = match inline {
                    Some(v) => v,
                    None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
                };
                if name == "--config" {
                    config_file = Some(value);
                } else {
                    options.push((name, Some(value)));
                }
            }
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    let mut config = match config_file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            EmulatorConfig::from_json(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => EmulatorConfig::default(),
    };
    for (name, value) in options {
        let value = value.unwrap_or_default();
        let bad = |what: &str| format!("{name}: {what} `{value}`");
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| bad("expected a whole number, got"))
        };
        match name.as_str() {
            "--strict-models" => config.strict_models = true,
            "--retry-after" => config.retry_after = true,
            "--listen" => config.listen = value.parse().map_err(|_| bad("bad address"))?,
            "--rpm" => config.default_quota.requests = Some(number()?),
            "--tpm" => config.default_quota.tokens = Some(number()?),
            "--tpd" => config.default_quota.tokens_per_day = Some(number()?),
            "--seed" => config.seed = number()?,
            "--account-tpd" => config.account_tokens_per_day = Some(number()?),
            "--burndown" => {
                let (pattern, n) = value
                    .rsplit_once('=')
                    .ok_or_else(|| bad("expected PATTERN=N, got"))?;
                let n: u64 = n.parse().map_err(|_| bad("bad burndown in"))?;
                config.burndown.insert(pattern.to_owned(), n);
            }
            "--mantle" => {
                let (model, limits) = value
                    .rsplit_once('=')
                    .ok_or_else(|| bad("expected MODEL=IN,OUT, got"))?;
                let (input, output) = limits
                    .split_once(',')
                    .ok_or_else(|| bad("expected MODEL=IN,OUT, got"))?;
                let parse = |n: &str| n.trim().parse::<u64>().map_err(|_| bad("bad limit in"));
                config.mantle_quotas.insert(
                    model.to_owned(),
                    bedrock_throttle::emulator::MantleQuota {
                        input: parse(input)?,
                        output: parse(output)?,
                    },
                );
            }
            "--model-table" => {
                config.model_table = bedrock_throttle::bedrock::ModelTable::from_file(&value)
                    .map_err(|e| e.to_string())?;
            }
            "--max-connections" => {
                config.max_connections =
                    usize::try_from(number()?).map_err(|_| bad("too large:"))?;
            }
            "--max-in-flight" => {
                config.max_in_flight = usize::try_from(number()?).map_err(|_| bad("too large:"))?;
            }
            "--header-read-timeout-ms" => {
                let ms: f64 = value
                    .parse()
                    .map_err(|_| bad("expected milliseconds, got"))?;
                config.header_read_timeout =
                    Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| bad("bad duration"))?;
            }
            "--window-secs" => {
                let secs: f64 = value.parse().map_err(|_| bad("expected seconds, got"))?;
                config.window =
                    Duration::try_from_secs_f64(secs).map_err(|_| bad("bad duration"))?;
            }
            "--ttft-ms" => {
                let ms: f64 = value
                    .parse()
                    .map_err(|_| bad("expected milliseconds, got"))?;
                config.latency.time_to_first_token =
                    Duration::try_from_secs_f64(ms / 1000.0).map_err(|_| bad("bad duration"))?;
            }
            "--tokens-per-second" => {
                config.latency.tokens_per_second =
                    Some(value.parse().map_err(|_| bad("expected a number, got"))?);
            }
            "--enforcement" => config.enforcement = value.parse().map_err(|e| format!("{e}"))?,
            "--output-tokens" => {
                config.output_length = value.parse::<OutputLength>().map_err(|e| format!("{e}"))?;
            }
            "--fault" => {
                let (fault, p) = value
                    .rsplit_once('=')
                    .ok_or_else(|| bad("expected FAULT=P, got"))?;
                let fault: Fault = fault.parse().map_err(|e| format!("{e}"))?;
                let p: f64 = p.parse().map_err(|_| bad("bad probability in"))?;
                config.faults.probabilities.push((fault, p));
            }
            "--fault-at" => {
                let (index, fault) = value
                    .split_once('=')
                    .ok_or_else(|| bad("expected INDEX=FAULT, got"))?;
                let index: u64 = index.parse().map_err(|_| bad("bad request index in"))?;
                let fault: Fault = fault.parse().map_err(|e| format!("{e}"))?;
                config.faults.schedule.insert(index, fault);
            }
            _ => return Err(format!("unknown argument `{name}`")),
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedrock_throttle::emulator::Enforcement;

    fn parse(args: &[&str]) -> Result<Option<EmulatorConfig>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn all_options() {
        let c = parse(&[
            "--listen",
            "127.0.0.1:9",
            "--rpm",
            "1",
            "--tpm=2",
            "--tpd",
            "3",
            "--window-secs",
            "0.5",
            "--enforcement",
            "fixed",
            "--output-tokens",
            "4..8",
            "--ttft-ms",
            "10",
            "--tokens-per-second",
            "100",
            "--fault",
            "stream:throttling@1=0.5",
            "--fault-at",
            "2=model-timeout",
            "--strict-models",
            "--retry-after",
            "--seed",
            "5",
            "--max-connections",
            "7",
            "--max-in-flight=3",
            "--header-read-timeout-ms",
            "250",
            "--burndown",
            "anthropic.claude-opus-4-8*=5",
            "--account-tpd=0",
            "--mantle",
            "openai.gpt-5.6-sol-v1:0=1000,100",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.listen.port(), 9);
        assert_eq!(
            (
                c.default_quota.requests,
                c.default_quota.tokens,
                c.default_quota.tokens_per_day
            ),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(c.window, Duration::from_millis(500));
        assert_eq!(c.enforcement, Enforcement::FixedWindow);
        assert_eq!(c.output_length, OutputLength::Uniform { min: 4, max: 8 });
        assert_eq!(c.latency.time_to_first_token, Duration::from_millis(10));
        assert_eq!(c.faults.probabilities.len(), 1);
        assert_eq!(c.faults.schedule[&2], Fault::ModelTimeout);
        assert!(c.strict_models && c.retry_after);
        assert_eq!(c.seed, 5);
        assert_eq!((c.max_connections, c.max_in_flight), (7, 3));
        assert_eq!(c.header_read_timeout, Duration::from_millis(250));
        assert_eq!(c.burndown["anthropic.claude-opus-4-8*"], 5);
        assert_eq!(c.account_tokens_per_day, Some(0));
        assert_eq!(c.mantle_quotas["openai.gpt-5.6-sol-v1:0"].output, 100);
    }

    #[test]
    fn errors() {
        for args in [
            &["--rpm"][..],
            &["--rpm", "x"],
            &["--bogus"],
            &["--window-secs", "0"],
            &["--enforcement", "leaky"],
            &["--fault", "model-timeout"],
            &["--fault", "model-timeout=2"],
            &["--config", "/nonexistent/file.json"],
            &["--max-connections", "0"],
            &["--max-in-flight", "0"],
            &["--header-read-timeout-ms", "0"],
            &["--burndown", "anthropic.claude-opus-4-8*=0"],
            &["--burndown", "nothing.matches*=5"],
            &["--burndown", "5"],
            &["--model-table", "/nonexistent/models.json"],
            &["--mantle", "m=1"],
            &["--mantle", "m=1,x"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
