//! Just enough of RESP (the Redis protocol) for GET, SET and DEL, so the
//! reference line of the comparison goes through the same generator.

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::request::{Failure, Reply, Request};
use super::workload::Op;

/// Largest bulk reply accepted (Redis's own limit is 512 MB).
const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;

pub struct RedisConn {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
    out: Vec<u8>,
}

impl RedisConn {
    pub async fn connect(node: &str) -> std::io::Result<RedisConn> {
        let stream = TcpStream::connect(node).await?;
        stream.set_nodelay(true)?;
        Ok(RedisConn { stream: BufReader::new(stream), line: Vec::new(), out: Vec::new() })
    }

    pub async fn call(&mut self, req: &Request<'_>) -> Result<Reply, Failure> {
        let key = req.key.as_bytes();
        self.out.clear();
        match req.op {
            Op::Read => encode(&mut self.out, &[b"GET", key]),
            Op::Write => encode(&mut self.out, &[b"SET", key, &req.value]),
            Op::Delete => encode(&mut self.out, &[b"DEL", key]),
        }
        let io = |e: std::io::Error| Failure::Connection(e.to_string());
        self.stream.get_mut().write_all(&self.out).await.map_err(io)?;
        match self.reply().await? {
            Resp::Bulk(Some(value)) if req.op == Op::Read => Ok(Reply::Value(value, None)),
            Resp::Bulk(None) if req.op == Op::Read => Ok(Reply::NotFound(None)),
            Resp::Simple | Resp::Integer if req.op != Op::Read => Ok(Reply::Done(None)),
            Resp::Error(e) => Err(Failure::Rejected(e)),
            other => Err(Failure::Protocol(format!("unexpected reply to {}: {other:?}", req.op.name()))),
        }
    }

    async fn reply(&mut self) -> Result<Resp, Failure> {
        let io = |e: std::io::Error| Failure::Connection(e.to_string());
        self.line.clear();
        let n = self.stream.read_until(b'\n', &mut self.line).await.map_err(io)?;
        if n == 0 {
            return Err(Failure::Connection("the server closed the connection".into()));
        }
        let line = self.line.strip_suffix(b"\r\n").ok_or_else(|| Failure::Protocol("a line without CRLF".into()))?;
        let (kind, rest) = line.split_first().ok_or_else(|| Failure::Protocol("an empty line".into()))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        match kind {
            b'+' => Ok(Resp::Simple),
            b'-' => Ok(Resp::Error(text)),
            b':' => {
                text.parse::<i64>().map(|_| Resp::Integer).map_err(|_| Failure::Protocol(format!("integer {text:?}")))
            }
            b'$' => {
                let len: i64 = text.parse().map_err(|_| Failure::Protocol(format!("bulk length {text:?}")))?;
                if len < 0 {
                    return Ok(Resp::Bulk(None));
                }
                let len = len as usize;
                if len > BULK_BYTES_MAX {
                    return Err(Failure::Protocol(format!("bulk reply of {len} bytes")));
                }
                let mut buf = vec![0; len + 2];
                self.stream.read_exact(&mut buf).await.map_err(io)?;
                buf.truncate(len);
                Ok(Resp::Bulk(Some(buf.into())))
            }
            _ => Err(Failure::Protocol(format!("reply type {:?}", *kind as char))),
        }
    }
}

#[derive(Debug)]
enum Resp {
    /// `+OK` and the like.
    Simple,
    Error(String),
    Integer,
    Bulk(Option<Bytes>),
}

/// A command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"v\r\n"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }
}
