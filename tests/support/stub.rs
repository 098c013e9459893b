//! Fault-injecting HTTP stubs: the only stand-ins for a real server, for
//! what a healthy one never does (hang, answer 500 or HTML), and for
//! counting the calls a client makes.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server on a loopback port that reads each request's head and then
/// sends `answer` (raw bytes), or, when `answer` is `None`, never answers
/// and keeps the connection open.
pub async fn stub(answer: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if read_head(&mut socket).await.is_none() {
                    return;
                }
                match answer {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                    None => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(socket);
                    }
                }
            });
        }
    });
    url
}

/// A request's head, read up to its blank line; `None` if the connection
/// ends or fails first.
async fn read_head(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

pub fn http(status: &str, content_type: &str, body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

/// A server on a loopback port that answers each request with
/// `route(method, target)` (raw bytes, as [`http`] makes them; `target` is
/// the path with its query) and records every request as `METHOD target`,
/// in the order they came.
pub async fn recording<F>(route: F) -> (String, Arc<Mutex<Vec<String>>>)
where
    F: Fn(&str, &str) -> String + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (route, seen) = (Arc::new(route), Arc::clone(&calls));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (route, seen) = (Arc::clone(&route), Arc::clone(&seen));
            tokio::spawn(async move {
                let Some(head) = read_head(&mut socket).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut words = head.split_whitespace();
                let (method, target) = (
                    words.next().unwrap_or("").to_owned(),
                    words.next().unwrap_or("").to_owned(),
                );
                let answer = route(&method, &target);
                seen.lock().unwrap().push(format!("{method} {target}"));
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, calls)
}
