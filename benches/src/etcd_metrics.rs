//! Reads etcd's own Prometheus metrics (served on the client URL at `/metrics`) over a plain
//! HTTP/1.0 request: the server's count of watchers and watch streams, and its version.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The metrics page of the etcd at `endpoint` (`http://host:port`).
pub(crate) fn fetch(endpoint: &str) -> Result<String, String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http endpoint: {endpoint}"))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(body)
}

/// The value of an unlabelled gauge or counter.
pub(crate) fn value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// Watchers open on the server (`etcd_debugging_mvcc_watcher_total`).
pub(crate) fn watchers(endpoint: &str) -> Option<f64> {
    value(&fetch(endpoint).ok()?, "etcd_debugging_mvcc_watcher_total")
}

/// The server's version, from `etcd_server_version{server_version="..."}`.
pub(crate) fn server_version(endpoint: &str) -> Option<String> {
    let page = fetch(endpoint).ok()?;
    let line = page
        .lines()
        .find(|l| l.starts_with("etcd_server_version{"))?;
    let start = line.find("server_version=\"")? + "server_version=\"".len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_values_only() {
        let page = "# HELP x\netcd_debugging_mvcc_watcher_total 12\netcd_debugging_mvcc_watcher_total_other 3\n";
        assert_eq!(value(page, "etcd_debugging_mvcc_watcher_total"), Some(12.0));
        assert_eq!(value(page, "missing"), None);
    }
}
