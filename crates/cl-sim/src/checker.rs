//! The checker: after every event, who holds each application (S1, S1', S2), and at the end
//! of the healed tail whether each runs on exactly one node (L1).

use cl_core::apps::AppState;
use cl_core::Time;

use super::{ms, other, Protection, Sim, Violation, APPS, L1_BOUND, NAMES};

impl Sim {
    pub(crate) fn violate(&mut self, rule: &'static str, what: String) {
        if self.violations.iter().any(|v| v.rule == rule) {
            return;
        }
        self.log(format!("VIOLATION {rule}: {what}"));
        self.violations.push(Violation { rule, at: self.now, what });
    }

    pub(crate) fn check_safety(&mut self) {
        let outside = !self.options.known_connections || self.net.outside.iter().all(|o| *o);
        // A blind spell lasts, for the nodes, until each has heard the other again: decisions
        // taken during it may still be carried out just after the network heals.
        let reunited = (0..2).all(|n| {
            self.nodes[n].engine.as_ref().is_some_and(|engine| {
                engine.peer_state(NAMES[other(n)]) == Some(cl_core::PeerState::Up)
            })
        });
        if !self.net.mutually_blind() && reunited {
            self.blind_while_outside = false;
        } else if self.net.mutually_blind() && outside {
            self.blind_while_outside = true;
        }
        for app in APPS {
            let both = self.nodes.iter().all(|node| node.held.contains(app));
            if !both {
                self.in_documented_episode.remove(app);
                continue;
            }
            if self.in_documented_episode.contains(app) {
                continue;
            }
            let protected = self.options.protection != Protection::None;
            if !protected && self.blind_while_outside {
                self.documented += 1;
                self.in_documented_episode.insert(app.to_string());
                self.log(format!(
                    "documented case: {app} held by both nodes while they cannot see each other"
                ));
                continue;
            }
            let rule = if protected { "S1" } else { "S1'" };
            self.violate(rule, format!("{app} is held by both nodes"));
        }
    }

    pub(crate) fn check_liveness(&mut self) {
        for app in APPS {
            // A stop that failed leaves the application to the administrator (or to fencing):
            // no node may start it, by design.
            let stuck = self.nodes.iter().any(|node| {
                node.engine
                    .as_ref()
                    .is_some_and(|engine| engine.apps().state(app) == Some(AppState::Stuck))
            });
            if stuck {
                continue;
            }
            let running: Vec<usize> = (0..2)
                .filter(|n| {
                    self.nodes[*n].held.contains(app)
                        && self.nodes[*n].engine.as_ref().is_some_and(|engine| {
                            engine.apps().state(app) == Some(AppState::Running)
                        })
                })
                .collect();
            if running.len() != 1 {
                let states: Vec<String> = (0..2)
                    .map(|n| {
                        let state = self.nodes[n]
                            .engine
                            .as_ref()
                            .and_then(|engine| engine.apps().state(app));
                        format!("{}={state:?}", NAMES[n])
                    })
                    .collect();
                self.violate(
                    "L1",
                    format!(
                        "{app} runs on {} nodes {} after the faults healed ({})",
                        running.len(),
                        ms(Time::ZERO + L1_BOUND),
                        states.join(", ")
                    ),
                );
            }
        }
    }
}
