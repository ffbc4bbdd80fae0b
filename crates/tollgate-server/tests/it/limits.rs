//! The connection loop's limits: a client that trickles its headers is cut off, and
//! connections beyond the cap wait for a free one instead of taking a file descriptor.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A server with one-second header and stall timeouts and at most `max_connections`,
/// on a data directory of its own (kept with it); and the address to connect to.
async fn limited(max_connections: usize) -> (tempfile::TempDir, TestApp, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(dir.path());
    cfg.http = tollgate_server::http::Limits {
        header_read_timeout: Duration::from_secs(1),
        max_connections,
        stall_timeout: Duration::from_secs(1),
    };
    let app = spawn_config(cfg).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    (dir, app, addr)
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got)).await.expect("closed in time");
    got
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let (_dir, app, addr) = limited(100).await;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tollgate\r\n").await.unwrap();
    // A byte now and then does not keep it alive.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.write_all(b"X").await.is_err() {
            break;
        }
    }
    let got = until_closed(&mut slow).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "closed after {took:?}");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{}", String::from_utf8_lossy(&got));
    // Whole requests are served as before.
    assert_eq!(app.get("/healthz").await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let (_dir, app, addr) = limited(1).await;
    // The one slot, held by a client that sends half a request.
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    holder.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next request is answered once the holder is cut off (about a second), not before.
    let started = Instant::now();
    let mut next = TcpStream::connect(&addr).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = until_closed(&mut next).await;
    let took = started.elapsed();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert!(took >= Duration::from_millis(500), "answered after {took:?}: the cap did not hold");
    until_closed(&mut holder).await;
    app.stop().await;
}

/// A client holding the one slot by stalling: `stall` is what it sends, then it neither
/// sends more nor reads. The next client is served once the server cuts it off.
async fn a_stalled_client_is_cut_off(stall: &[u8]) {
    let (_dir, app, addr) = limited(1).await;
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    holder.write_all(stall).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = TcpStream::connect(&addr).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = until_closed(&mut next).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    drop(holder);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_is_cut_off() {
    // Authorized, so that the request is answered only after its body is read.
    let head = format!(
        "POST /v1/validate HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\":"
    );
    a_stalled_client_is_cut_off(head.as_bytes()).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_cut_off() {
    // Pipelined requests for a large document, never read: the answers fill the
    // socket's buffers and the server's writes stall.
    let one = b"GET /v1/openapi.json HTTP/1.1\r\nHost: tollgate\r\n\r\n";
    a_stalled_client_is_cut_off(&one.repeat(400)).await;
}

/// A request whose handler takes longer than the stall timeout (here, waiting for a
/// sequence the node does not reach) still gets its answer: hyper keeps a read pending
/// meanwhile, and a read timeout on the connection used to cut it off.
#[tokio::test]
async fn a_slow_handler_is_not_taken_for_a_stalled_client() {
    let (_dir, app, addr) = limited(10).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /v1/licenses HTTP/1.1\r\nHost: tollgate\r\nAuthorization: Bearer {ADMIN}\r\n\
         Tollgate-Min-Seq: 999999\r\nConnection: close\r\n\r\n"
    );
    let started = Instant::now();
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&until_closed(&mut conn).await).to_string();
    assert!(started.elapsed() > Duration::from_secs(2), "the handler waited: {:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("SEQ_NOT_REACHED"), "{answer}");
    app.stop().await;
}
