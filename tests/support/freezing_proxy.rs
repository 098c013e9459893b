//! A TCP proxy on loopback that can freeze: while frozen it accepts
//! connections and keeps every one open, but forwards no byte either way —
//! what a network partition or a stopped server looks like from the client.
//! Bytes read just before a freeze are held until the thaw, never dropped.
//!
//! Every task it starts stops when the proxy is dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct FreezingProxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    stop: CancellationToken,
    accepted: Arc<AtomicUsize>,
}

impl FreezingProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (frozen, _) = watch::channel(false);
        let stop = CancellationToken::new();
        let (rx, cancel) = (frozen.subscribe(), stop.clone());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = listener.accept() => match c {
                        Ok((c, _)) => c,
                        Err(_) => continue,
                    },
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, rx.clone(), cancel.clone()));
                tokio::spawn(pump(sr, cw, rx.clone(), cancel.clone()));
            }
        });
        FreezingProxy {
            addr,
            frozen,
            stop,
            accepted,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far, frozen or not: a client that gives up
    /// on a frozen connection and tries again shows here.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops forwarding; connections stay open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, starting with what was held.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = frozen.wait_for(|f| !*f) => {}
        }
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            _ = frozen.wait_for(|f| *f) => continue,
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = frozen.wait_for(|f| !*f) => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
