//! A TCP proxy that a test can cut ([`TcpProxy::cut`]: every open connection is closed and new
//! ones are closed as soon as they arrive) and restore ([`TcpProxy::resume`]), to take a
//! server away from one process without touching the server or the other processes.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    /// `127.0.0.1:PORT` the proxy listens on.
    pub addr: String,
    /// `true` while cut. Connection tasks watch it and close when it turns true.
    cut: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(watch::Sender::new(false));
        let accept = tokio::spawn(accept_loop(listener, upstream.to_owned(), cut.clone()));
        TcpProxy { addr, cut, accept }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// Closes every open connection and refuses new ones (closes them at once) until
    /// [`TcpProxy::resume`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn resume(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connection tasks end with their sockets.
        self.cut.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, cut: Arc<watch::Sender<bool>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *cut.borrow() {
            // Refused: closed before a byte is exchanged.
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, upstream.clone(), cut.subscribe()));
    }
}

async fn forward(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|&cut| cut) => {}
    }
    // Both sockets close here.
}
