//! HTTPS: with `--tls-cert` and `--tls-key` the server speaks TLS (rustls) with a certificate
//! made here for the test, plain HTTP on that port gets nowhere, a handshake that never comes
//! is timed out, and unusable key files stop start-up with one line naming the option.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
struct TestCertificate {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl TestCertificate {
    fn new() -> TestCertificate {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("a test certificate");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), made.key_pair.serialize_pem()).unwrap();
        TestCertificate {
            der: made.cert.der().clone(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// The server on `data` with TLS; returns it and its `127.0.0.1:port`.
async fn start_https(
    cert: &TestCertificate,
    data: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args([
            "--tls-cert",
            &cert.path("cert.pem"),
            "--tls-key",
            &cert.path("key.pem"),
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = strip_ansi(&line);
            if let Some(at) = line.find("listening on https://") {
                let rest = &line[at + "listening on https://".len()..];
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server did not say where it listens");
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// One request over TLS; the whole answer.
async fn https_exchange(cert: &TestCertificate, addr: &str, request: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = cert
        .connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the test certificate");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn events_go_in_and_out_over_https() {
    let cert = TestCertificate::new();
    let data = tempfile::tempdir().unwrap();
    let (_server, addr) = start_https(&cert, data.path(), &["--header-timeout", "2s"]).await;

    let body = r#"{"id":"over-tls","type":"secure"}"#;
    let post = format!(
        "POST /events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = https_exchange(&cert, &addr, &post).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let answer = https_exchange(
        &cert,
        &addr,
        "GET /events/over-tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"type\":\"secure\""), "{answer}");

    // Plain HTTP on the TLS port is not answered as HTTP.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "{got:?}"
    );

    // A connection that never starts its handshake is closed after the header timeout.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut sink = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut sink)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unusable_key_files_stop_start_up_naming_the_option() {
    let cert = TestCertificate::new();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let missing = cert.path("nowhere.pem");
    let key = cert.path("key.pem");
    let stderr = serve_refused(
        "127.0.0.1:0",
        &dir,
        &["--tls-cert", &missing, "--tls-key", &key],
    )
    .await;
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    // One without the other is a usage error.
    let (status, _, stderr) = run_binary(&["serve", "--tls-cert", &cert.path("cert.pem")]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
