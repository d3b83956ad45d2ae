//! The test CA (made once per test process with `openssl`) and HTTP clients that trust it.

use super::*;

/// An HTTP client for the test's nodes: it trusts the test CA, and over TLS
/// offers `h2` (and `http/1.1`) by ALPN.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().add_root_certificate(
        reqwest::Certificate::from_pem(&test_ca().pem).expect("test CA certificate"),
    )
}

/// A certificate authority made for this test process (`openssl`), which
/// issues the nodes' certificates.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate, PEM.
    pub pem: Vec<u8>,
}

/// A server certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The process's test CA (made on first use).
pub fn test_ca() -> &'static TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-test-ca-{}", rand_id()));
        std::fs::create_dir_all(&dir).expect("CA dir");
        let (key, pem) = (dir.join("ca.key"), dir.join("ca.pem"));
        openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2",
            &["-subj", "/CN=Switchyard test CA"],
            &[("-keyout", &key), ("-out", &pem)],
        );
        let pem = std::fs::read(pem).expect("CA certificate");
        TestCa { dir, pem }
    })
}

impl TestCa {
    /// The CA certificate's file.
    pub fn pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `localhost` and 127.0.0.1 into `dir`
    /// (`cert.pem`, `key.pem`), with `cn` as its common name.
    pub fn issue(&self, dir: &std::path::Path, cn: &str) -> Leaf {
        std::fs::create_dir_all(dir).expect("leaf dir");
        let id = rand_id();
        let csr = dir.join(format!("{id}.csr"));
        let ext = dir.join(format!("{id}.ext"));
        let leaf = Leaf {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        openssl(
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
            &["-subj", &format!("/CN={cn}")],
            &[("-keyout", &leaf.key), ("-out", &csr)],
        );
        openssl(
            "x509 -req -days 2",
            &["-set_serial", &format!("0x{id}")],
            &[
                ("-in", &csr),
                ("-CA", &self.dir.join("ca.pem")),
                ("-CAkey", &self.dir.join("ca.key")),
                ("-extfile", &ext),
                ("-out", &leaf.cert),
            ],
        );
        let _ = std::fs::remove_file(csr);
        let _ = std::fs::remove_file(ext);
        leaf
    }
}

/// Runs `openssl` with `fixed` (split at spaces), `args` and `files`.
fn openssl(fixed: &str, args: &[&str], files: &[(&str, &std::path::Path)]) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(fixed.split(' ')).args(args);
    for (flag, path) in files {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().expect("openssl (installed by scripts/setup)");
    assert!(
        out.status.success(),
        "openssl {fixed}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
