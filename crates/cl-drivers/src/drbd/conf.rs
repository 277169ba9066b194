//! The DRBD resource file of one replicated volume (`/etc/drbd.d/linuxha-<name>.res`), for DRBD
//! 8.4 (`drbdadm` 9.x dispatches to its 8.4 backend, which reads this syntax), and the check that
//! `/etc/drbd.conf` includes `drbd.d/*.res`.
//!
//! Keywords and units are those of drbd.conf(5) for 8.4: `fencing` is a `disk` option in 8.4 (it
//! moved to `net` in 9); `ping-int` and `connect-int` are in seconds, `ping-timeout` and
//! `timeout` in tenths of a second; `resync-rate` in KiB/s, used as a fixed rate because
//! `c-plan-ahead 0` turns the dynamic resync controller off. Handlers are run by `drbdadm`
//! through `/bin/sh -c`, so the program path is restricted to characters that need no quoting.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the resource files go.
pub const DRBD_D: &str = "/etc/drbd.d";

/// DRBD's limits (drbd_limits.h, 8.4).
const PING_INT_SECS: (u64, u64) = (1, 120);
const CONNECT_INT_SECS: (u64, u64) = (1, 120);
const PING_TIMEOUT_TENTHS: (u64, u64) = (1, 300);
const TIMEOUT_TENTHS: (u64, u64) = (1, 600);
const RESYNC_RATE_KIB: (u64, u64) = (1, 4 << 20);
/// Minors are 20 bits.
const MINOR_MAX: u32 = (1 << 20) - 1;

/// One node of a resource (the configuration's type: one definition for the whole chain).
pub use cl_config::drbd::DrbdNode as NodeEndpoint;
/// A replicated volume's resource, as the configuration resolves it.
pub use cl_config::drbd::DrbdResource;
/// Fencing and split-brain policies, as the configuration names them.
pub use cl_config::replication::{AfterSplitBrain, Fencing};

/// One replicated volume (one DRBD resource with one volume, protocol C, internal metadata) as
/// this node writes it: the configuration's resource plus the linuxha program DRBD's handlers
/// run here (`<program> drbd-handler <handler>`). Reads and writes go through to the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// Everything but the handler.
    pub resource: DrbdResource,
    /// The linuxha program DRBD's handlers run on this node.
    pub handler: PathBuf,
}

impl std::ops::Deref for ResourceSpec {
    type Target = DrbdResource;
    fn deref(&self) -> &DrbdResource {
        &self.resource
    }
}

impl std::ops::DerefMut for ResourceSpec {
    fn deref_mut(&mut self) -> &mut DrbdResource {
        &mut self.resource
    }
}

/// A resource specification DRBD would not accept, or that cannot be written safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DRBD resource {resource}: {problem}")]
pub struct ConfError {
    /// The resource name.
    pub resource: String,
    /// What is wrong.
    pub problem: String,
}

impl ResourceSpec {
    /// The path of its resource file, `/etc/drbd.d/linuxha-<name>.res`.
    pub fn file_path(&self) -> PathBuf {
        resource_file_path(&self.name)
    }

    /// The DRBD device, `/dev/drbd<minor>`.
    pub fn device(&self) -> PathBuf {
        PathBuf::from(format!("/dev/drbd{}", self.minor))
    }
}

/// The path of resource `name`'s file.
pub fn resource_file_path(name: &str) -> PathBuf {
    Path::new(DRBD_D).join(format!("linuxha-{name}.res"))
}

/// The text of the resource file: deterministic (same spec, same bytes), nodes in the given order.
pub fn render(spec: &ResourceSpec) -> Result<String, ConfError> {
    let bad = |problem: String| ConfError { resource: spec.name.clone(), problem };
    if super::check_resource_name(&spec.name).is_err() {
        return Err(bad(format!(
            "resource name {:?} must be 1–128 letters, digits, `.`, `_`, `-`, not starting with `-`",
            spec.name
        )));
    }
    if spec.minor > MINOR_MAX {
        return Err(bad(format!("minor {} is above DRBD's limit {MINOR_MAX}", spec.minor)));
    }
    let [a, b] = spec.nodes.as_slice() else {
        return Err(bad(format!("needs exactly 2 nodes, has {}", spec.nodes.len())));
    };
    if a.hostname == b.hostname {
        return Err(bad(format!("both nodes are named {}", a.hostname)));
    }
    for node in [a, b] {
        check_word("host name", &node.hostname).map_err(bad)?;
        let disk = node.backing_disk.to_str().unwrap_or("");
        check_word("backing disk", disk).map_err(bad)?;
        if !disk.starts_with('/') {
            return Err(bad(format!("backing disk {disk} of {} is not absolute", node.hostname)));
        }
        if node.port == 0 {
            return Err(bad(format!("port 0 for {}", node.hostname)));
        }
    }
    let handler = spec.handler.to_str().unwrap_or("");
    check_word("handler program", handler).map_err(bad)?;
    if !handler.starts_with('/') {
        return Err(bad(format!("handler program {handler} is not an absolute path")));
    }
    let ping_int = whole_secs("ping-int", spec.ping_int, PING_INT_SECS).map_err(bad)?;
    let connect_int = whole_secs("connect-int", spec.connect_int, CONNECT_INT_SECS).map_err(bad)?;
    let ping_timeout =
        tenths("ping-timeout", spec.ping_timeout, PING_TIMEOUT_TENTHS).map_err(bad)?;
    let timeout = tenths("timeout", spec.timeout, TIMEOUT_TENTHS).map_err(bad)?;
    if timeout >= connect_int * 10 || timeout >= ping_int * 10 {
        return Err(bad(format!(
            "timeout {:?} must be below connect-int {:?} and ping-int {:?} (drbd.conf(5))",
            spec.timeout, spec.connect_int, spec.ping_int
        )));
    }
    let (lo, hi) = RESYNC_RATE_KIB;
    if !(lo..=hi).contains(&spec.resync_rate_kib) {
        return Err(bad(format!(
            "resync rate {} KiB/s is outside DRBD's range {lo}–{hi}",
            spec.resync_rate_kib
        )));
    }
    let fencing = match spec.fencing {
        Fencing::ResourceOnly => "resource-only",
        Fencing::ResourceAndStonith => "resource-and-stonith",
    };
    let (sb0, sb1) = match spec.after_sb {
        AfterSplitBrain::Disconnect => ("disconnect", "disconnect"),
        AfterSplitBrain::DiscardZeroChanges => ("discard-zero-changes", "consensus"),
    };

    let mut t = String::new();
    // Infallible: writing to a String.
    let _ = writeln!(
        t,
        "# Written by linuxha: do not edit, it is rewritten from the application's configuration."
    );
    let _ = writeln!(t, "resource {} {{", spec.name);
    let _ = writeln!(t, "    protocol C;");
    let _ = writeln!(t, "    device /dev/drbd{};", spec.minor);
    let _ = writeln!(t, "    meta-disk internal;");
    let _ = writeln!(t, "    disk {{");
    let _ = writeln!(t, "        on-io-error detach;");
    let _ = writeln!(t, "        fencing {fencing};");
    let _ = writeln!(t, "        c-plan-ahead 0;");
    let _ = writeln!(t, "        resync-rate {}K;", spec.resync_rate_kib);
    let _ = writeln!(t, "    }}");
    let _ = writeln!(t, "    net {{");
    let _ = writeln!(t, "        ping-int {ping_int};");
    let _ = writeln!(t, "        ping-timeout {ping_timeout};");
    let _ = writeln!(t, "        connect-int {connect_int};");
    let _ = writeln!(t, "        timeout {timeout};");
    let _ = writeln!(t, "        after-sb-0pri {sb0};");
    let _ = writeln!(t, "        after-sb-1pri {sb1};");
    let _ = writeln!(t, "        after-sb-2pri disconnect;");
    let _ = writeln!(t, "    }}");
    let _ = writeln!(t, "    handlers {{");
    for h in ["fence-peer", "after-resync-target", "split-brain"] {
        let _ = writeln!(t, "        {h} \"{handler} drbd-handler {h}\";");
    }
    let _ = writeln!(t, "    }}");
    for node in [a, b] {
        let _ = writeln!(t, "    on {} {{", node.hostname);
        let _ = writeln!(t, "        disk {};", node.backing_disk.display());
        let address = match node.address {
            IpAddr::V4(ip) => format!("ipv4 {ip}:{}", node.port),
            IpAddr::V6(ip) => format!("ipv6 [{ip}]:{}", node.port),
        };
        let _ = writeln!(t, "        address {address};");
        let _ = writeln!(t, "    }}");
    }
    let _ = writeln!(t, "}}");
    Ok(t)
}

/// A word drbdadm's scanner reads unquoted: `[a-zA-Z0-9/._-]{1,128}`, not starting with `-`.
fn check_word(what: &str, word: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
    if word.is_empty() || word.len() > 128 || word.starts_with('-') || !word.chars().all(ok_char) {
        return Err(format!(
            "{what} {word:?} must be 1–128 characters of letters, digits, `/`, `.`, `_`, `-` (what drbd.conf accepts unquoted)"
        ));
    }
    Ok(())
}

fn whole_secs(what: &str, d: Duration, (lo, hi): (u64, u64)) -> Result<u64, String> {
    if d.subsec_nanos() != 0 || !(lo..=hi).contains(&d.as_secs()) {
        return Err(format!("{what} {d:?} must be whole seconds from {lo} to {hi}"));
    }
    Ok(d.as_secs())
}

fn tenths(what: &str, d: Duration, (lo, hi): (u64, u64)) -> Result<u64, String> {
    let ms = d.as_millis();
    let n = u64::try_from(ms / 100).unwrap_or(u64::MAX);
    if ms % 100 != 0 || d.subsec_nanos() % 1_000_000 != 0 || !(lo..=hi).contains(&n) {
        return Err(format!(
            "{what} {d:?} must be a multiple of 0.1 s from {:?} to {:?}",
            Duration::from_millis(lo * 100),
            Duration::from_millis(hi * 100)
        ));
    }
    Ok(n)
}

/// Whether drbd.conf `text` includes the resource files linuxha writes: a top-level
/// `include "drbd.d/*.res";` (or `/etc/drbd.d/*.res`, or `drbd.d/*`, quoted or not).
pub fn drbd_conf_includes_drbd_d(text: &str) -> bool {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let line = line.replace(';', " ; ").replace('{', " { ").replace('}', " } ");
        tokens.extend(line.split_whitespace().map(str::to_string));
    }
    let mut depth = 0usize;
    for (i, tok) in tokens.iter().enumerate() {
        match tok.as_str() {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            "include" if depth == 0 => {
                let pattern = tokens.get(i + 1).map(|p| p.trim_matches('"')).unwrap_or("");
                let pattern = pattern.strip_prefix("/etc/").unwrap_or(pattern);
                if matches!(pattern, "drbd.d/*.res" | "drbd.d/*") {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// The error for a drbd.conf that does not include the resource files, with the fix.
pub fn missing_include_error(conf_path: &Path) -> String {
    format!(
        "{} does not include the DRBD resource files linuxha writes to {DRBD_D}: add the line \
         `include \"drbd.d/*.res\";` to it (Debian's drbd-utils ships it so)",
        conf_path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ResourceSpec {
        ResourceSpec { resource: resource(), handler: "/usr/sbin/linuxha".into() }
    }

    fn resource() -> DrbdResource {
        DrbdResource {
            name: "web-data".into(),
            minor: 3,
            nodes: vec![
                NodeEndpoint {
                    hostname: "alpha".into(),
                    backing_disk: "/dev/vg0/web-data".into(),
                    address: "192.168.77.1".parse().expect("ip"),
                    port: 7790,
                },
                NodeEndpoint {
                    hostname: "beta".into(),
                    backing_disk: "/dev/mapper/vg1-web--data".into(),
                    address: "192.168.77.2".parse().expect("ip"),
                    port: 7790,
                },
            ],
            fencing: Fencing::ResourceOnly,
            after_sb: AfterSplitBrain::Disconnect,
            resync_rate_kib: 40960,
            ping_int: Duration::from_secs(2),
            ping_timeout: Duration::from_millis(500),
            connect_int: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }
    }

    const GOLDEN: &str = r#"# Written by linuxha: do not edit, it is rewritten from the application's configuration.
resource web-data {
    protocol C;
    device /dev/drbd3;
    meta-disk internal;
    disk {
        on-io-error detach;
        fencing resource-only;
        c-plan-ahead 0;
        resync-rate 40960K;
    }
    net {
        ping-int 2;
        ping-timeout 5;
        connect-int 2;
        timeout 10;
        after-sb-0pri disconnect;
        after-sb-1pri disconnect;
        after-sb-2pri disconnect;
    }
    handlers {
        fence-peer "/usr/sbin/linuxha drbd-handler fence-peer";
        after-resync-target "/usr/sbin/linuxha drbd-handler after-resync-target";
        split-brain "/usr/sbin/linuxha drbd-handler split-brain";
    }
    on alpha {
        disk /dev/vg0/web-data;
        address ipv4 192.168.77.1:7790;
    }
    on beta {
        disk /dev/mapper/vg1-web--data;
        address ipv4 192.168.77.2:7790;
    }
}
"#;

    #[test]
    fn renders_the_golden_text() {
        assert_eq!(render(&spec()).expect("valid"), GOLDEN);
        assert_eq!(spec().file_path(), PathBuf::from("/etc/drbd.d/linuxha-web-data.res"));
        assert_eq!(spec().device(), PathBuf::from("/dev/drbd3"));
    }

    #[test]
    fn stonith_fencing_discard_zero_changes_and_ipv6() {
        let mut s = spec();
        s.fencing = Fencing::ResourceAndStonith;
        s.after_sb = AfterSplitBrain::DiscardZeroChanges;
        s.nodes[1].address = "fd00::2".parse().expect("ip");
        let text = render(&s).expect("valid");
        for line in [
            "        fencing resource-and-stonith;\n",
            "        after-sb-0pri discard-zero-changes;\n",
            "        after-sb-1pri consensus;\n",
            "        after-sb-2pri disconnect;\n",
            "        address ipv6 [fd00::2]:7790;\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Only these lines differ from the golden text.
        let differing = text.lines().zip(GOLDEN.lines()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 4);
    }

    #[test]
    fn refuses_what_drbd_or_the_shell_would_misread() {
        type Change = Box<dyn Fn(&mut ResourceSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.name = "web data".into()), "resource name"),
            (Box::new(|s| s.name = "-x".into()), "resource name"),
            (Box::new(|s| s.nodes.pop().map(|_| ()).unwrap_or(())), "exactly 2 nodes"),
            (Box::new(|s| s.nodes[1].hostname = "alpha".into()), "both nodes"),
            (Box::new(|s| s.nodes[0].backing_disk = "/dev/my disk".into()), "backing disk"),
            (Box::new(|s| s.nodes[0].backing_disk = "dev/sdb".into()), "not absolute"),
            (Box::new(|s| s.handler = "/opt/x;rm -rf /".into()), "handler program"),
            (Box::new(|s| s.handler = "linuxha".into()), "not an absolute path"),
            (Box::new(|s| s.ping_timeout = Duration::from_millis(550)), "ping-timeout"),
            (Box::new(|s| s.ping_int = Duration::from_millis(1500)), "ping-int"),
            (Box::new(|s| s.connect_int = Duration::from_secs(121)), "connect-int"),
            (Box::new(|s| s.timeout = Duration::from_secs(2)), "must be below"),
            (Box::new(|s| s.resync_rate_kib = 0), "resync rate"),
            (Box::new(|s| s.minor = 1 << 20), "minor"),
            (Box::new(|s| s.nodes[0].port = 0), "port 0"),
        ];
        for (change, expected) in cases {
            let mut s = spec();
            change(&mut s);
            let err = render(&s).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} (wanted {expected})");
        }
    }

    #[test]
    fn finds_the_include_of_drbd_d() {
        let debian = "# You can find an example in  /usr/share/doc/drbd.../drbd.conf.example\n\
                      include \"drbd.d/global_common.conf\";\ninclude \"drbd.d/*.res\";\n";
        assert!(drbd_conf_includes_drbd_d(debian));
        assert!(drbd_conf_includes_drbd_d("include /etc/drbd.d/*.res;"));
        assert!(drbd_conf_includes_drbd_d("global { usage-count no; }\ninclude \"drbd.d/*\";"));
        assert!(!drbd_conf_includes_drbd_d("# include \"drbd.d/*.res\";\n"));
        assert!(!drbd_conf_includes_drbd_d("include \"drbd.d/global_common.conf\";"));
        assert!(!drbd_conf_includes_drbd_d("resource r { include \"drbd.d/*.res\"; }"));
        assert!(!drbd_conf_includes_drbd_d(""));
        let msg = missing_include_error(Path::new("/etc/drbd.conf"));
        assert!(msg.contains("include \"drbd.d/*.res\";"), "{msg}");
    }
}
