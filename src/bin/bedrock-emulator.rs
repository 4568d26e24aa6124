//! `bedrock-emulator`: a local Amazon Bedrock Runtime that enforces quotas with the real wire
//! format. See `bedrock_throttle::emulator` for what it does; `--help` for the options.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bedrock_throttle::emulator::{
    Emulator, EmulatorConfig, Enforcement, Fault, MantleQuota, OutputLength,
};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

const FAULTS: &str = "\
FAULTS:
    service-unavailable, too-many-connections, internal-server, model-timeout,
    model-not-ready, model-error, access-denied, service-quota-exceeded,
    stream:<exception>@<events> with <exception> one of throttling, service-unavailable,
    internal-server, model-stream-error, model-timeout, validation. A fault is injected
    only into operations whose Bedrock model defines it (service-quota-exceeded: InvokeModel
    and InvokeModelWithResponseStream; stream:model-timeout: InvokeModelWithResponseStream);
    other operations answer normally.

The first line on stdout is `listening on http://ADDR`. Stats: GET /_emulator/stats.
SIGINT or SIGTERM shut it down gracefully.";

/// The command line: every option, its value's parser, and the help text.
fn command() -> Command {
    let value = |name: &'static str, value_name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name(value_name)
            .help(help)
            .action(ArgAction::Set)
    };
    Command::new("bedrock-emulator")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A local Amazon Bedrock Runtime that enforces quotas with the real wire format")
        .after_help(FAULTS)
        .arg(
            value("listen", "ADDR", "Address to bind [default: 127.0.0.1:0]")
                .value_parser(value_parser!(SocketAddr)),
        )
        .arg(value(
            "config",
            "FILE.json",
            "JSON configuration (the options below override it)",
        ))
        .arg(value("rpm", "N", "Default requests per window").value_parser(value_parser!(u64)))
        .arg(value("tpm", "N", "Default tokens per window").value_parser(value_parser!(u64)))
        .arg(
            value("tpd", "N", "Default tokens per day (1440 windows)")
                .value_parser(value_parser!(u64)),
        )
        .arg(
            value(
                "window-secs",
                "S",
                "Window length in seconds, fractions allowed [default: 60]",
            )
            .value_parser(seconds),
        )
        .arg(
            value(
                "enforcement",
                "E",
                "How the window is enforced [default: sliding]",
            )
            .value_parser(["sliding", "token-bucket", "fixed"]),
        )
        .arg(
            value(
                "output-tokens",
                "N|MIN..MAX",
                "Generated output tokens [default: 32]",
            )
            .value_parser(|s: &str| s.parse::<OutputLength>().map_err(|e| e.to_string())),
        )
        .arg(
            value(
                "ttft-ms",
                "MS",
                "Time to first token in milliseconds [default: 0]",
            )
            .value_parser(milliseconds),
        )
        .arg(
            value(
                "tokens-per-second",
                "N",
                "Generation speed [default: instantaneous]",
            )
            .value_parser(value_parser!(f64)),
        )
        .arg(
            value(
                "fault",
                "FAULT=P",
                "Inject FAULT with probability P (repeatable)",
            )
            .action(ArgAction::Append)
            .value_parser(fault_probability),
        )
        .arg(
            value(
                "fault-at",
                "INDEX=FAULT",
                "Inject FAULT into inference request INDEX (repeatable)",
            )
            .action(ArgAction::Append)
            .value_parser(fault_at),
        )
        .arg(
            Arg::new("strict-models")
                .long("strict-models")
                .action(ArgAction::SetTrue)
                .help(
                    "Refuse model ids the emulator does not know, as Bedrock does \
                     (WITHOUT it, ANY model id is served, even a misspelt one)",
                ),
        )
        .arg(
            value(
                "max-connections",
                "N",
                "Connections served at once [default: 4096]",
            )
            .value_parser(value_parser!(usize)),
        )
        .arg(
            value(
                "max-in-flight",
                "N",
                "Requests read, validated or answered at once [default: 1024]",
            )
            .value_parser(value_parser!(usize)),
        )
        .arg(
            value(
                "header-read-timeout-ms",
                "MS",
                "Time a client may take to send its headers [default: 30000]",
            )
            .value_parser(milliseconds),
        )
        .arg(
            Arg::new("retry-after")
                .long("retry-after")
                .action(ArgAction::SetTrue)
                .help("Send x-amz-retry-after on throttles"),
        )
        .arg(
            value("seed", "N", "Seed of the generators [default: 0]")
                .value_parser(value_parser!(u64)),
        )
        .arg(
            value(
                "burndown",
                "PATTERN=N",
                "Settle the output of models PATTERN names (an id, or `*`/`?` matching a table \
                 row) at N instead of the table's (repeatable)",
            )
            .action(ArgAction::Append)
            .value_parser(burndown),
        )
        .arg(value(
            "model-table",
            "FILE.json",
            "Take families, maximums and burndowns from this table",
        ))
        .arg(
            value(
                "account-tpd",
                "N",
                "Account-wide tokens per day across models (0 refuses every call)",
            )
            .value_parser(value_parser!(u64)),
        )
        .arg(
            value(
                "mantle",
                "MODEL=IN,OUT",
                "bedrock-mantle input and output tokens per window for MODEL on \
                 /v1/chat/completions and /v1/responses (repeatable)",
            )
            .action(ArgAction::Append)
            .value_parser(mantle),
        )
}

fn mantle(s: &str) -> Result<(String, MantleQuota), String> {
    let (model, limits) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected MODEL=IN,OUT".to_owned())?;
    let (input, output) = limits
        .split_once(',')
        .ok_or_else(|| "expected MODEL=IN,OUT".to_owned())?;
    let parse = |n: &str| {
        n.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad limit `{n}`"))
    };
    Ok((
        model.to_owned(),
        MantleQuota {
            input: parse(input)?,
            output: parse(output)?,
        },
    ))
}

fn burndown(s: &str) -> Result<(String, u64), String> {
    let (pattern, n) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected PATTERN=N".to_owned())?;
    let n: u64 = n.parse().map_err(|_| format!("bad burndown `{n}`"))?;
    Ok((pattern.to_owned(), n))
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| "expected seconds".to_owned())?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn milliseconds(s: &str) -> Result<Duration, String> {
    let ms: f64 = s.parse().map_err(|_| "expected milliseconds".to_owned())?;
    Duration::try_from_secs_f64(ms / 1000.0).map_err(|e| e.to_string())
}

fn fault_probability(s: &str) -> Result<(Fault, f64), String> {
    let (fault, p) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected FAULT=P".to_owned())?;
    let fault: Fault = fault.parse().map_err(|e| format!("{e}"))?;
    let p: f64 = p.parse().map_err(|_| format!("bad probability `{p}`"))?;
    Ok((fault, p))
}

fn fault_at(s: &str) -> Result<(u64, Fault), String> {
    let (index, fault) = s
        .split_once('=')
        .ok_or_else(|| "expected INDEX=FAULT".to_owned())?;
    let index: u64 = index
        .parse()
        .map_err(|_| format!("bad request index `{index}`"))?;
    let fault: Fault = fault.parse().map_err(|e| format!("{e}"))?;
    Ok((index, fault))
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os()) {
        Ok(config) => config,
        // `--help` and `--version` print and exit 0; bad input prints and exits 2.
        Err(Invalid::Clap(error)) => error.exit(),
        Err(Invalid::Config(message)) => {
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

/// Why the command line gives no configuration.
#[derive(Debug)]
enum Invalid {
    /// Clap's answer: a bad flag or value (exit status 2), or `--help` / `--version` (0).
    Clap(clap::Error),
    /// The configuration file, or the configuration as a whole, is invalid.
    Config(String),
}

/// Parses the arguments (the program name first) into a validated configuration: the file
/// given with `--config`, then the options over it.
fn parse_args<I, T>(args: I) -> Result<EmulatorConfig, Invalid>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command()
        .try_get_matches_from(args)
        .map_err(Invalid::Clap)?;
    config_from(&matches).map_err(Invalid::Config)
}

fn config_from(m: &ArgMatches) -> Result<EmulatorConfig, String> {
    let mut config = match m.get_one::<String>("config") {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            EmulatorConfig::from_json(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => EmulatorConfig::default(),
    };
    if let Some(&address) = m.get_one::<SocketAddr>("listen") {
        config.listen = address;
    }
    if let Some(&n) = m.get_one("rpm") {
        config.default_quota.requests = Some(n);
    }
    if let Some(&n) = m.get_one("tpm") {
        config.default_quota.tokens = Some(n);
    }
    if let Some(&n) = m.get_one("tpd") {
        config.default_quota.tokens_per_day = Some(n);
    }
    if let Some(&d) = m.get_one("window-secs") {
        config.window = d;
    }
    if let Some(e) = m.get_one::<String>("enforcement") {
        config.enforcement = e.parse::<Enforcement>().map_err(|e| e.to_string())?;
    }
    if let Some(&o) = m.get_one::<OutputLength>("output-tokens") {
        config.output_length = o;
    }
    if let Some(&d) = m.get_one("ttft-ms") {
        config.latency.time_to_first_token = d;
    }
    if let Some(&n) = m.get_one("tokens-per-second") {
        config.latency.tokens_per_second = Some(n);
    }
    if let Some(faults) = m.get_many::<(Fault, f64)>("fault") {
        config.faults.probabilities.extend(faults.cloned());
    }
    if let Some(faults) = m.get_many::<(u64, Fault)>("fault-at") {
        for (index, fault) in faults.cloned() {
            config.faults.schedule.insert(index, fault);
        }
    }
    if m.get_flag("strict-models") {
        config.strict_models = true;
    }
    if m.get_flag("retry-after") {
        config.retry_after = true;
    }
    if let Some(&n) = m.get_one("seed") {
        config.seed = n;
    }
    if let Some(&n) = m.get_one("max-connections") {
        config.max_connections = n;
    }
    if let Some(&n) = m.get_one("max-in-flight") {
        config.max_in_flight = n;
    }
    if let Some(&d) = m.get_one("header-read-timeout-ms") {
        config.header_read_timeout = d;
    }
    if let Some(&n) = m.get_one("account-tpd") {
        config.account_tokens_per_day = Some(n);
    }
    if let Some(overrides) = m.get_many::<(String, u64)>("burndown") {
        config.burndown.extend(overrides.cloned());
    }
    if let Some(quotas) = m.get_many::<(String, MantleQuota)>("mantle") {
        config.mantle_quotas.extend(quotas.cloned());
    }
    if let Some(path) = m.get_one::<String>("model-table") {
        config.model_table =
            bedrock_throttle::bedrock::ModelTable::from_file(path).map_err(|e| e.to_string())?;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<EmulatorConfig, Invalid> {
        parse_args(std::iter::once("bedrock-emulator").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_is_well_formed() {
        command().debug_assert();
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
            match parse(args) {
                Err(Invalid::Clap(e)) => assert_eq!(e.exit_code(), 2, "{args:?}: {e}"),
                Err(Invalid::Config(_)) => {}
                Ok(_) => panic!("{args:?} parsed"),
            }
        }
        // The valid values are in the message.
        let Err(Invalid::Clap(e)) = parse(&["--enforcement", "leaky"]) else {
            panic!("leaky parsed");
        };
        let message = e.to_string();
        assert!(message.contains("token-bucket"), "{message}");
        // Help and version are answers, not errors: exit status 0.
        for flag in ["--help", "-h", "--version", "-V"] {
            let Err(Invalid::Clap(e)) = parse(&[flag]) else {
                panic!("{flag} parsed");
            };
            assert_eq!(e.exit_code(), 0, "{flag}");
        }
    }
}
