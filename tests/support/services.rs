//! Private Redis and PostgreSQL servers, for the tests that stop them.

use super::*;

/// A private `redis-server` on a free port, for tests that stop Redis.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts one (nothing on disk).
    pub async fn start() -> PrivateRedis {
        let port = free_port();
        let mut r = PrivateRedis { port, child: None };
        r.restart().await;
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("private redis up", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await;
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL cluster on a free port (Debian's binaries, run as the
/// `postgres` user), for tests that stop the database.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts one.
    pub async fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(format!("switchyard-pg-{}", rand_id()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
        };
        pg.as_postgres(
            &["chown", "-R", "postgres", &pg.dir.display().to_string()],
            true,
        );
        let initdb = pg.bin.join("initdb").display().to_string();
        let data = pg.dir.join("data").display().to_string();
        pg.as_postgres(
            &[
                &initdb,
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            false,
        );
        pg.restart().await;
        pg
    }

    fn as_postgres(&self, args: &[&str], as_root: bool) {
        let status = if as_root || !is_root() {
            std::process::Command::new(args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .status()
        } else {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .status()
        };
        assert!(status.expect("run").success(), "{args:?} failed");
    }

    /// Its URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again).
    pub async fn restart(&self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.as_postgres(
            &[&pg_ctl, "-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
            false,
        );
    }

    /// Stops it (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        self.as_postgres(&[&pg_ctl, "-D", &data, "-m", "fast", "-w", "stop"], false);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
