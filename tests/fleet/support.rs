//! Real Redis servers for the fleet tests: started on free loopback ports, stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary: `redis-server`, or the one `BT_FLEET_SERVER` names (a path or a name on
/// PATH, e.g. Valkey's `valkey-server`; `scripts/test` runs the fleet tests on both).
pub fn server_binary() -> String {
    std::env::var("BT_FLEET_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Fails the test with a clear message when the server binaries are missing: the fleet tests
/// never skip silently.
fn require(binary: &str) {
    let found = std::path::Path::new(binary).is_file()
        || std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).is_file()))
            .unwrap_or(false);
    assert!(
        found,
        "`{binary}` is not on PATH: the fleet tests need a real Redis. Run ./scripts/test (it \
         installs redis-server and redis-tools with apt-get) or `apt-get install -y \
         redis-server redis-tools`"
    );
}

/// A port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` child process.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    cluster: bool,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port(), false)
    }

    fn start_on(port: u16, cluster: bool) -> Self {
        require(&server_binary());
        let dir = std::env::temp_dir().join(format!("bt-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            cluster,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_binary());
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            let _ = std::fs::remove_file(self.dir.join("nodes.conf"));
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.sync_conn()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn sync_conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Runs one command on a fresh connection.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let mut c = self.sync_conn().expect("connect");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).expect("command")
    }

    /// Kills the server (SIGKILL): its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-master Redis Cluster made with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(free_port(), true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        'wait: while Instant::now() < deadline {
            for n in &nodes {
                let info = match n.cmd(&["CLUSTER", "INFO"]) {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    redis::Value::VerbatimString { text, .. } => text,
                    other => format!("{other:?}"),
                };
                if !info.contains("cluster_state:ok") {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'wait;
                }
            }
            return RedisCluster { nodes };
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// An integer reply (or a bulk string holding one).
pub fn int(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        other => text(other).parse().unwrap_or(-1),
    }
}

/// A string reply.
pub fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// Every key on the server (the tests' servers hold only the store's).
pub fn keys(server: &RedisServer) -> Vec<String> {
    match server.cmd(&["KEYS", "*"]) {
        redis::Value::Array(k) => k.iter().map(text).collect(),
        other => panic!("KEYS: {other:?}"),
    }
}

/// Fills the window of key `k` of `store` with ten settled admissions of 100 tokens (a limit of
/// 1,000): what follows queues.
pub async fn fill_window<S: bedrock_throttle::budget::QuotaStore<String>>(store: &S) {
    for _ in 0..10 {
        store
            .acquire("k".to_owned(), 100)
            .await
            .unwrap()
            .settle(100);
    }
}
