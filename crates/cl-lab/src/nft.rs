//! Rendering the lab's bridge faults into one nft ruleset.
//!
//! The whole table is rebuilt from the fault list on every change and loaded with one `nft -f`,
//! so the switch never holds a half-applied set of rules and healing is just "render fewer rules".

use std::fmt::Write as _;

use crate::{Direction, Fault};

/// Name of the nft table (family `bridge`) in the switch namespace.
pub(crate) const TABLE: &str = "linuxha_lab";

/// Name of the switch-side veth port of `host` on network `net`: `n<i>e<net>` for `node<i>`,
/// `exte<net>` for `ext`. Short on purpose: interface names are limited to 15 bytes.
pub(crate) fn port_name(host: &str, net: usize) -> String {
    match host.strip_prefix("node") {
        Some(index) => format!("n{index}e{net}"),
        None => format!("{host}e{net}"),
    }
}

/// The complete nft script: create-then-delete makes it idempotent (deleting a missing table
/// is an error), and the whole file is one transaction.
pub(crate) fn render(faults: &[Fault]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table bridge {TABLE}");
    let _ = writeln!(s, "delete table bridge {TABLE}");
    let _ = writeln!(s, "table bridge {TABLE} {{");
    // `fwd` is a reserved word in nft; `forward` is fine as a chain name.
    let _ = writeln!(s, "  chain forward {{");
    let _ = writeln!(s, "    type filter hook forward priority 0; policy accept;");
    for fault in faults {
        for rule in rules(fault) {
            let _ = writeln!(s, "    {rule}");
        }
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

/// Script that removes the table (idempotently) at teardown.
pub(crate) fn render_delete() -> String {
    format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n")
}

/// The nft rules for one fault.
fn rules(fault: &Fault) -> Vec<String> {
    match fault {
        Fault::Cut { host, net } => {
            let port = port_name(host, *net);
            let tag = format!("comment \"cut {host} net{net}\"");
            vec![format!("iifname \"{port}\" drop {tag}"), format!("oifname \"{port}\" drop {tag}")]
        }
        Fault::OneWay { host, net, direction } => {
            let port = port_name(host, *net);
            let (dir, label) = match direction {
                Direction::FromNode => ("iifname", "from"),
                Direction::ToNode => ("oifname", "to"),
            };
            // Only IP: dropping ARP one way would also kill the replies of the other direction.
            vec![format!(
                "{dir} \"{port}\" ether type {{ ip, ip6 }} drop comment \"oneway {label} {host} net{net}\""
            )]
        }
        Fault::Between { host, other, net } => {
            let (a, b) = (port_name(host, *net), port_name(other, *net));
            let tag = format!("comment \"cut {host} from {other} net{net}\"");
            vec![
                format!("iifname \"{a}\" oifname \"{b}\" drop {tag}"),
                format!("iifname \"{b}\" oifname \"{a}\" drop {tag}"),
            ]
        }
        Fault::Loss { host, net, percent } => {
            let port = port_name(host, *net);
            let tag = format!("comment \"loss {percent}% {host} net{net}\"");
            // numgen yields 0..=99 and nft rejects comparing it with 100, so 100% is a plain drop.
            let chance = if *percent >= 100 {
                String::new()
            } else {
                format!("numgen random mod 100 < {percent} ")
            };
            // Both directions lose independently, like a flaky cable.
            vec![
                format!("iifname \"{port}\" {chance}drop {tag}"),
                format!("oifname \"{port}\" {chance}drop {tag}"),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_short() {
        assert_eq!(port_name("node1", 0), "n1e0");
        assert_eq!(port_name("node12", 1), "n12e1");
        assert_eq!(port_name("ext", 0), "exte0");
    }

    #[test]
    fn empty_ruleset_has_accepting_chain() {
        let s = render(&[]);
        assert!(s.starts_with("table bridge linuxha_lab\ndelete table bridge linuxha_lab\n"));
        assert!(s.contains("chain forward {"));
        assert!(s.contains("policy accept;"));
        assert!(!s.contains("drop"));
    }

    #[test]
    fn faults_render_to_rules() {
        let s = render(&[
            Fault::Cut { host: "node1".into(), net: 0 },
            Fault::OneWay { host: "node2".into(), net: 1, direction: Direction::ToNode },
            Fault::Loss { host: "ext".into(), net: 0, percent: 30 },
        ]);
        assert!(s.contains("iifname \"n1e0\" drop comment \"cut node1 net0\""));
        assert!(s.contains("oifname \"n1e0\" drop"));
        assert!(s.contains("oifname \"n2e1\" ether type { ip, ip6 } drop"));
        assert!(s.contains("iifname \"exte0\" numgen random mod 100 < 30 drop"));
        let s = render(&[Fault::Loss { host: "node1".into(), net: 0, percent: 100 }]);
        assert!(s.contains("oifname \"n1e0\" drop comment \"loss 100% node1 net0\""));
    }
}
