//! `floor`: the least work an SSE server can do per delivery, as a yardstick.
//!
//! A plain-threads server with no log, no routing and no per-connection
//! task: `GET` anything and the connection joins one list of sockets;
//! `POST` anything and the body goes out, as one `id:`/`data:` frame built
//! once, to every socket in the list with one non-blocking `send` each, on
//! the publisher's connection thread, before the `201` answer. A socket that
//! does not take a frame whole is dropped from the list (a real server would
//! queue; this one measures the cost of the write itself).
//!
//! `bench.sh fanout-floor` runs the same load against it as against
//! Switchyard and nginx + nchan: the CPU per delivery it needs is what one
//! write per delivery costs on the machine (the kernel's part of it is the
//! same for every server), and its latency is what a single thread looping
//! over every subscriber gets.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use crate::args::Args;

/// Options `floor` accepts.
pub const FLOOR_OPTS: &[&str] = &["listen", "nodelay"];

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

/// Serves until killed.
pub fn run(a: &Args) -> Result<(), String> {
    let listen = a.str_or("listen", "127.0.0.1:18402");
    let listener =
        TcpListener::bind(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("floor listening on {listen}");
    // `--nodelay 0` leaves Nagle's algorithm on for subscribers (as a server
    // that never sets `TCP_NODELAY` on them would).
    let nodelay = a.num::<u8>("nodelay", 1)? != 0;
    let subs: Subscribers = Arc::default();
    let seq = Arc::new(Mutex::new(0u64));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let subs = subs.clone();
        let seq = seq.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &subs, &seq, nodelay) {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    eprintln!("connection: {e}");
                }
            }
        });
    }
    Ok(())
}

/// One connection: a `GET` joins the subscribers (and the thread ends);
/// `POST`s are served keep-alive, each fanned out before its answer.
fn serve(conn: TcpStream, subs: &Subscribers, seq: &Mutex<u64>, nodelay: bool) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let method = line.split(' ').next().unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        match method.as_str() {
            "GET" => {
                writer.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                      Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
                )?;
                writer.set_nonblocking(true)?;
                writer.set_nodelay(nodelay)?;
                subs.lock().unwrap_or_else(|p| p.into_inner()).push(writer);
                return Ok(());
            }
            "POST" => {
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                let n = {
                    let mut s = seq.lock().unwrap_or_else(|p| p.into_inner());
                    *s += 1;
                    let n = *s;
                    let mut frame = format!("id: {n}\nevent: bench\ndata: ").into_bytes();
                    frame.extend_from_slice(&body);
                    frame.extend_from_slice(b"\n\n");
                    fan_out(subs, &frame);
                    n
                };
                let answer = format!("{{\"id\":{n}}}");
                write!(
                    writer,
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{answer}",
                    answer.len()
                )?;
            }
            _ => {
                writer.write_all(
                    b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
        }
    }
}

/// One `send` per subscriber; a socket that does not take the frame whole
/// (or failed) leaves the list.
fn fan_out(subs: &Subscribers, frame: &[u8]) {
    let mut list = subs.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|s| {
        // SAFETY: `s` is an open socket owned by the list; `frame` is valid.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        n == frame.len() as isize
    });
}
