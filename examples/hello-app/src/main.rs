//! The hello app (README, QEMU tier): the smallest thing worth running on a
//! device. It prints a line at start and one every [`TICK`], and answers
//! every HTTP request on `$PORT` (default [`DEFAULT_PORT`]) with
//! [`GREETING`]. Standard library only, so it links statically for any
//! board and runs in an image built `FROM scratch`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The port without `$PORT`.
const DEFAULT_PORT: u16 = 8080;
/// What the app prints and answers.
const GREETING: &str = "hello from wendy";
/// Between two lines of output.
const TICK: Duration = Duration::from_secs(5);
/// A client that sends nothing for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most request header lines read.
const MAX_HEADER_LINES: usize = 100;

fn main() {
    let port = match std::env::var("PORT") {
        Err(_) => DEFAULT_PORT,
        Ok(v) => match v.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                eprintln!("hello-app: PORT={v:?} is not a port number");
                std::process::exit(2);
            }
        },
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello-app: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("{GREETING}: listening on port {port}");
    std::thread::spawn(|| {
        for n in 1u64.. {
            std::thread::sleep(TICK);
            println!("{GREETING} ({n})");
        }
    });
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Err(e) = answer(stream) {
                eprintln!("hello-app: a client: {e}");
            }
        });
    }
}

/// Reads the request's head (bounded) and answers [`GREETING`].
fn answer(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));
    let mut line = String::new();
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("{GREETING}\n");
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
