//! The linuxha daemons by name: a node's cluster daemons, and the arbitrator's.

use serde::{Deserialize, Serialize};

/// One linuxha daemon. Each runs as `<name>-<cluster>` (as Linuxha.net's did), logs to
/// `<name>.log` and keeps `<name>-<cluster>.pid`; the name is also how daemons report to
/// cldaemon ([`crate::msg::LocalEvent`]). Daemons order by name, so whatever is kept by
/// daemon (cldaemon's children, clstat's counters and listeners) lists as the names sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    // Declared in the order of their names: the derived order is the names' order.
    /// Arbitrator (on a third host, not a cluster node).
    Clarbd,
    /// Node manager.
    Cldaemon,
    /// Heartbeat receiver.
    Clhbd,
    /// Heartbeat sender.
    Clhbd2,
    /// Lock daemon.
    Cllockd,
    /// Network daemon.
    Clnetd,
}

impl Daemon {
    /// Every daemon.
    pub const ALL: [Daemon; 6] = [
        Daemon::Cldaemon,
        Daemon::Cllockd,
        Daemon::Clnetd,
        Daemon::Clhbd,
        Daemon::Clhbd2,
        Daemon::Clarbd,
    ];

    /// The daemon's name, as in `<name>-<cluster>` and its log file.
    pub const fn name(self) -> &'static str {
        match self {
            Daemon::Cldaemon => "cldaemon",
            Daemon::Cllockd => "cllockd",
            Daemon::Clnetd => "clnetd",
            Daemon::Clhbd => "clhbd",
            Daemon::Clhbd2 => "clhbd2",
            Daemon::Clarbd => "clarbd",
        }
    }

    /// The process name it runs under for `cluster` (`clhbd-cluster1`), as `ps` shows it.
    pub fn process_name(self, cluster: &str) -> String {
        format!("{}-{cluster}", self.name())
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_is_carried_as_its_name() {
        for daemon in Daemon::ALL {
            let json = serde_json::to_string(&daemon).expect("serialise");
            assert_eq!(json, format!("\"{daemon}\""));
            let back: Daemon = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, daemon);
        }
        assert_eq!(Daemon::Clhbd2.process_name("c-1"), "clhbd2-c-1");
    }

    #[test]
    fn daemons_order_by_name() {
        let mut sorted = Daemon::ALL;
        sorted.sort();
        let names: Vec<&str> = sorted.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["clarbd", "cldaemon", "clhbd", "clhbd2", "cllockd", "clnetd"]);
    }
}
