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

/// A private Redis Cluster: `masters` masters, each with one replica
/// (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster
/// create`), nothing on disk.
pub struct RedisCluster {
    /// Every node's port (masters first, as created).
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: std::collections::HashMap<u16, std::process::Child>,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        // Client ports 12000-21999 and bus ports 22000-31999: below the
        // kernel's ephemeral ports (32768 up), which outgoing connections
        // take, and no bus port is another node's client port.
        let p = 12_000
            + (rand_id()
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
                % 10_000) as u16;
        if taken.contains(&p) {
            continue;
        }
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(p) && free(p + 10_000) {
            return p;
        }
    }
}

impl RedisCluster {
    /// Starts `masters` masters and as many replicas, and waits until the
    /// cluster says `cluster_state:ok` everywhere. Tests run side by side
    /// pick ports at random: a start that finds a port taken after all is
    /// made again on others.
    pub async fn start(masters: usize) -> RedisCluster {
        for _ in 0..5 {
            if let Some(c) = RedisCluster::try_start(masters).await {
                c.wait_ok().await;
                // Every replica has its master's data.
                for p in &c.ports {
                    wait_for("replica in sync", secs(30), || async {
                        let info = c.cli(*p, &["INFO", "replication"]);
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
                    .await;
                }
                return c;
            }
        }
        panic!("could not start a Redis Cluster in five attempts");
    }

    async fn try_start(masters: usize) -> Option<RedisCluster> {
        let dir = std::env::temp_dir().join(format!("switchyard-rc-{}", rand_id()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut ports = Vec::new();
        for _ in 0..masters * 2 {
            let p = free_cluster_port(&ports);
            ports.push(p);
        }
        let mut c = RedisCluster {
            ports: ports.clone(),
            dir,
            children: Default::default(),
        };
        for p in &ports {
            c.spawn(*p);
        }
        for p in &ports {
            let addr = format!("127.0.0.1:{p}");
            wait_for("cluster node up", secs(10), || async {
                tokio::net::TcpStream::connect(&addr).await.is_ok()
            })
            .await;
        }
        // A server that found its port taken has exited: someone else answered.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for child in c.children.values_mut() {
            if !matches!(child.try_wait(), Ok(None)) {
                return None;
            }
        }
        let mut create = std::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        if !out.status.success() {
            eprintln!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            );

            return None;
        }
        Some(c)
    }

    fn spawn(&mut self, port: u16) {
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        // A replica writes what its master sends to `dump.rdb` in its
        // working dir, which a server started there later would load.
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let child = std::process::Command::new("redis-server")
            .arg("--dir")
            .arg(&dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1500"])
            // A replica takes over however long ago it last heard its master.
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--cluster-config-file")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.children.insert(port, child);
    }

    /// The seed list, as `REDIS_URL` takes it.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis-cli` against one node.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(port, args)
    }

    /// A live node's port.
    fn any_live(&self) -> u16 {
        *self
            .children
            .keys()
            .next()
            .expect("a node of the cluster runs")
    }

    /// The port of the master that holds `key`'s slot now.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.any_live();
        let slot: u16 = self
            .cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        for line in self.cli(port, &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let owns = f[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    (a.parse().unwrap_or(u16::MAX)..=b.parse().unwrap_or(0)).contains(&slot)
                }
                None => range.parse() == Ok(slot),
            });
            if owns {
                let addr = f[1].split('@').next().unwrap_or("");
                return addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
            }
        }
        panic!("no master holds slot {slot}");
    }

    /// Masters holding slots now.
    pub fn masters(&self) -> usize {
        self.cli(self.any_live(), &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
            })
            .count()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(mut c) = self.children.remove(&port) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        let ports: Vec<u16> = self.children.keys().copied().collect();
        wait_for("redis cluster ok", secs(30), || async {
            ports.iter().all(|p| {
                self.cli(*p, &["CLUSTER", "INFO"])
                    .lines()
                    .any(|l| l.trim() == "cluster_state:ok")
            })
        })
        .await;
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli` against the server on `port`: its standard output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves every slot of the cluster master on `from` to the master on `to`
/// (`redis-cli --cluster reshard`, keys included); blocks until done.
pub fn reshard_all(from: u16, to: u16) {
    let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).trim().to_string();
    let owned: usize = redis_cli(from, &["CLUSTER", "NODES"])
        .lines()
        .find(|l| l.contains("myself"))
        .map(|l| {
            l.split_whitespace()
                .skip(8)
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0)
                    }
                    None => 1,
                })
                .sum()
        })
        .unwrap_or(0);
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
        .args(["--cluster-from", &id(from)])
        .args(["--cluster-to", &id(to)])
        .args(["--cluster-slots", &owned.to_string(), "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
