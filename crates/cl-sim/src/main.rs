//! `cargo run --release -p cl-sim -- [--seeds N] [--from S] [--seed S] [--protection P] [--no-known] [--fast] [--replicated] [--no-slow-pings]
//! [--sabotage skip-gates|keep-running]`
//!
//! Runs random schedules and prints `N passed, N failed`; with `--seed` it runs one schedule and
//! prints its whole trace.

use std::process::ExitCode;

use cl_core::guard::Sabotage;
use cl_sim::{run, Options, Protection};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut seeds: u64 = 1000;
    let mut from: u64 = 0;
    let mut one: Option<u64> = None;
    let mut protections: Vec<Protection> = Protection::ALL.to_vec();
    let mut known = true;
    let mut fast = false;
    let mut replicated = false;
    let mut slow_pings = true;
    let mut sabotage = Sabotage::None;
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| args.next().unwrap_or_default();
        match arg.as_str() {
            "--seeds" => seeds = value(&mut args).parse().unwrap_or(seeds),
            "--from" => from = value(&mut args).parse().unwrap_or(from),
            "--seed" => one = value(&mut args).parse().ok(),
            "--protection" => match value(&mut args).parse() {
                Ok(p) => protections = vec![p],
                Err(e) => {
                    eprintln!("cl-sim: {e}");
                    return ExitCode::from(2);
                }
            },
            "--no-known" => known = false,
            "--fast" => fast = true,
            "--replicated" => replicated = true,
            "--no-slow-pings" => slow_pings = false,
            // A deliberately broken rule, to see what the checker catches and how.
            "--sabotage" => match value(&mut args).as_str() {
                "skip-gates" => sabotage = Sabotage::SkipGates,
                "keep-running" => sabotage = Sabotage::KeepRunningAfterLease,
                other => {
                    eprintln!("cl-sim: unknown sabotage `{other}` (skip-gates, keep-running)");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("cl-sim: unknown argument `{other}` (--seeds N, --from S, --seed S, --protection none|fencing|arbitrator|both, --no-known, --fast, --replicated, --no-slow-pings, --sabotage skip-gates|keep-running)");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(seed) = one {
        let mut failed = false;
        for protection in protections {
            let mut options = Options::new(protection);
            options.known_connections = known;
            options.fast_profile = fast;
            options.replicated = replicated;
            options.slow_pings = slow_pings;
            options.sabotage = sabotage;
            options.full_trace = true;
            let outcome = run(seed, options);
            for line in &outcome.trace {
                println!("{line}");
            }
            println!(
                "seed {seed} ({protection:?}): {} events, {} documented two-holder episodes",
                outcome.events, outcome.documented
            );
            for v in &outcome.violations {
                println!("  {v}");
                failed = true;
            }
        }
        return if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
    let (mut passed, mut failed, mut documented) = (0u64, 0u64, 0u64);
    for protection in protections {
        for seed in from..from + seeds {
            let mut options = Options::new(protection);
            options.known_connections = known;
            options.fast_profile = fast;
            options.replicated = replicated;
            options.slow_pings = slow_pings;
            options.sabotage = sabotage;
            let outcome = run(seed, options);
            documented += u64::from(outcome.documented);
            if outcome.violations.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                println!(
                    "seed {seed} ({protection:?}): {}",
                    outcome.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; ")
                );
                println!(
                    "  replay: cargo run --release -p cl-sim -- --seed {seed} --protection {}",
                    format!("{protection:?}").to_lowercase()
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed ({documented} documented two-holder episodes without protection)");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
