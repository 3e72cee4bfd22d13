//! A private Kafka-protocol broker (tansu, as installed by `cargo xtask up`) for the
//! scenarios that restart the broker or put a network between it and the services —
//! faults that must not hit the shared broker other tests are using.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PrivateBroker {
    dir: PathBuf,
    pub port: u16,
    advertised: SocketAddr,
    child: Option<Child>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tansu() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let installed = cargo_home.join("bin").join("tansu");
    if installed.exists() {
        return installed;
    }
    panic!(
        "the broker tansu is not installed (looked for {}); `cargo xtask up` installs it",
        installed.display()
    )
}

impl PrivateBroker {
    /// Starts tansu on a free port with its own storage. Clients are told to connect
    /// to `advertised` (the broker itself, or a proxy in front of it).
    pub fn start(port: u16, advertised: Option<SocketAddr>) -> PrivateBroker {
        let dir = std::env::temp_dir().join(format!(
            "ferriseats-broker-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = PrivateBroker {
            dir,
            port,
            advertised: advertised.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port))),
            child: None,
        };
        broker.launch();
        broker
    }

    /// The address services bootstrap from.
    pub fn brokers(&self) -> String {
        self.advertised.to_string()
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("tansu.log")).unwrap();
        // tansu 0.6 resolves a sqlite:// path against its working directory.
        let child = Command::new(tansu())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--advertised-listener-url",
                &format!("tcp://{}", self.advertised),
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning tansu");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "private tansu did not listen on {} within 30 s; see {}",
                self.port,
                self.dir.join("tansu.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no clean shutdown, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
