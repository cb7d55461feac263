//! A local HTTP receiver for the admin webhook: it accepts HTTP/1.1 requests on
//! `127.0.0.1`, answers each with 204 and keeps what it received for the tests to read.
//! It must listen before the application starts, since the application is configured
//! with its URL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Listens until the process ends.
pub struct WebhookReceiver {
    addr: SocketAddr,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

/// The path the application is told to post to.
pub const HOOK_PATH: &str = "/hooks/stock-alerts";

impl WebhookReceiver {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let sink = Arc::clone(&deliveries);
        std::thread::Builder::new()
            .name("webhook-receiver".to_owned())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let sink = Arc::clone(&sink);
                    std::thread::spawn(move || {
                        if let Err(e) = serve(stream, &sink) {
                            eprintln!("webhook receiver: connection failed: {e}");
                        }
                    });
                }
            })?;
        Ok(Self { addr, deliveries })
    }

    /// The URL to configure as `alert_webhook_url`.
    pub fn url(&self) -> String {
        format!("{}{HOOK_PATH}", self.origin())
    }

    /// The origin to configure as `alert_webhook_origin`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Reads requests off one connection until the client closes it.
fn serve(stream: TcpStream, sink: &Mutex<Vec<Delivery>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut reader)?
        } else {
            let length = find("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            body
        };
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Delivery {
                method,
                path,
                headers,
                body,
            });
        writer.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")?;
        writer.flush()?;
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}
