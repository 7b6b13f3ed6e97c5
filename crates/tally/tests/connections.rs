//! Connections on loopback against a real `serve`: connections that never send a byte are
//! closed after the header timeout, and so are keep-alive connections that go quiet (hyper
//! waits at most the header timeout for a next request; the idle timeout covers what has no
//! header timer, such as HTTP/2), and at
//! the connection limit the server keeps serving (new clients wait for a free place instead of
//! exhausting file descriptors).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally::app::{Config, Location, Tally};
use tally::server::{Hub, ServerConfig, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(
    settings: ServerConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let tally = Tally::open(&Location::Memory, Config::default()).unwrap();
    let hub = Arc::new(Hub::new(tally, settings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(hub, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// `GET /healthz` on a new connection; the status line.
async fn health(addr: std::net::SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Whether the server closed `conn` (a read sees the end) within `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_and_others_served_meanwhile() {
    let (addr, stop, server) = start(ServerConfig {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(4),
        ..ServerConfig::default()
    })
    .await;
    // 1,100 connections that never send a byte.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..1_100 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A well-behaved client is served meanwhile, and quickly.
    let started = Instant::now();
    assert_eq!(health(addr).await, "HTTP/1.1 200 OK");
    assert!(started.elapsed() < Duration::from_millis(900));
    // Every silent connection is closed after the header timeout, well before the idle one.
    for conn in &mut silent {
        assert!(closed_within(conn, Duration::from_secs(5)).await);
    }
    assert!(
        opened.elapsed() < Duration::from_secs(3),
        "{:?}",
        opened.elapsed()
    );
    // A keep-alive connection that goes quiet after a request is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let quiet = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "{:?}",
        quiet.elapsed()
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_server_keeps_serving() {
    let (addr, stop, server) = start(ServerConfig {
        header_timeout: Duration::from_secs(1),
        max_connections: 5,
        ..ServerConfig::default()
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..5 {
        holders.push(TcpStream::connect(addr).await.unwrap());
    }
    // The sixth waits in the backlog until a place frees up (the silent ones time out), then is
    // answered: nothing fails, nothing exhausts the process.
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), health(addr))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(started.elapsed() >= Duration::from_millis(500));
    drop(holders);
    // Once the places are free, clients are served at once.
    let started = Instant::now();
    assert_eq!(health(addr).await, "HTTP/1.1 200 OK");
    assert!(started.elapsed() < Duration::from_millis(900));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
