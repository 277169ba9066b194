//! The small helpers the benchmark runs inside the lab's hosts: the TCP service behind the VIP,
//! the health check keepalived's track_script calls, and a timer for status commands.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The node this process runs on: `--name`, else `LINUXHA_NODE`, else derived from eth0's
/// lab address (10.10.0.1N is nodeN), for services started by a cluster manager that cleans
/// the environment.
pub fn node_name(given: Option<&str>) -> String {
    if let Some(name) = given {
        return name.to_string();
    }
    if let Ok(name) = std::env::var("LINUXHA_NODE") {
        if !name.is_empty() {
            return name;
        }
    }
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    name_from_addrs(&text).unwrap_or_else(|| "unknown".into())
}

/// `nodeN` from the first 10.10.0.(10+N) address in `ip -o addr` output.
pub fn name_from_addrs(text: &str) -> Option<String> {
    text.split_whitespace()
        .filter_map(|w| w.split('/').next())
        .filter_map(|a| a.strip_prefix("10.10.0."))
        .filter_map(|last| last.parse::<u8>().ok())
        .find(|n| (11..=99).contains(n))
        .map(|n| format!("node{}", n - 10))
}

/// The service: accepts connections on `port` and answers each with the node's name.
pub fn serve(port: u16, name: &str) -> Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .with_context(|| format!("listening on port {port}"))?;
    let greeting = format!("{name}\n");
    for mut stream in listener.incoming().flatten() {
        let _ = stream.write_all(greeting.as_bytes());
    }
    Ok(())
}

/// The health check: exit 0 when a TCP connect to 127.0.0.1:`port` succeeds within `timeout`.
pub fn check(port: u16, timeout: Duration) -> Result<()> {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)
        .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    Ok(())
}

/// Runs `argv` `count` times (output discarded) and prints each run's wall time in
/// milliseconds as a JSON array; a run that exits non-zero still counts (clstat exits 3 on a
/// node that is not formed).
pub fn repeat(count: usize, argv: &[String]) -> Result<()> {
    let Some((program, args)) = argv.split_first() else { bail!("repeat: no command") };
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {program}"))?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    println!("{}", serde_json::to_string(&times)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_lab_addresses() {
        let text = "2: eth0    inet 10.10.0.12/24 scope global eth0\n2: eth0    inet 10.10.0.100/24 scope global secondary eth0\n";
        assert_eq!(name_from_addrs(text).as_deref(), Some("node2"));
        assert_eq!(name_from_addrs("inet 10.10.0.1/24").as_deref(), None);
        assert_eq!(name_from_addrs("").as_deref(), None);
    }
}
