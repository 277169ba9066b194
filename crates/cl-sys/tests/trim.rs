//! `trim_file_pages` in a process of its own: it refuses to run beside other threads, and
//! libtest runs every test on a thread, so this file has no libtest harness.

use std::process::ExitCode;

use cl_sys::trim::trim_file_pages;

/// This process's `VmRSS` in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS line")
}

/// Some work that runs code of the binary and libc again after the trim.
fn work() -> usize {
    let words: Vec<String> = (0..2000).map(|i| format!("word {i}")).collect();
    words.iter().filter(|w| w.ends_with('7')).count()
}

fn main() -> ExitCode {
    let before = rss_kib();
    let report = match trim_file_pages() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trim_file_pages failed in a single-threaded process: {e}");
            return ExitCode::FAILURE;
        }
    };
    let after = rss_kib();
    // The code still runs (the dropped pages fault back in) and gives the same answer.
    let (first, second) = (work(), work());
    let again = rss_kib();
    println!("trim: {report:?}; RSS {before} KiB before, {after} after, {again} after work");
    let mut ok = true;
    if first != 200 || second != 200 {
        eprintln!("work gave {first} and {second} after the trim, expected 200");
        ok = false;
    }
    if report.mappings == 0 || report.dropped_kib == 0 {
        eprintln!("nothing was trimmed: the test binary's own text should have been");
        ok = false;
    }
    // Generous bounds: the trim must drop something and RSS must not grow past where it was.
    if after >= before {
        eprintln!("RSS did not fall: {before} KiB before, {after} after");
        ok = false;
    }
    if again > before + 1024 {
        eprintln!("RSS grew by more than 1 MiB after running again: {before} → {again} KiB");
        ok = false;
    }
    // Locked on fault, as clhbd and clhbd2 run: the locked mappings are trimmed too.
    if cl_sys::realtime::try_lock_memory().is_ok() {
        match trim_file_pages() {
            Ok(locked) => {
                println!("trim while locked on fault: {locked:?}");
                if locked.mappings == 0 || locked.refused != 0 {
                    eprintln!("locked mappings were not trimmed: {locked:?}");
                    ok = false;
                }
            }
            Err(e) => {
                eprintln!("trim_file_pages failed while locked: {e}");
                ok = false;
            }
        }
        if work() != 200 {
            eprintln!("work gave a different answer after trimming locked mappings");
            ok = false;
        }
        // SAFETY: munlockall has no arguments and no memory-safety preconditions.
        unsafe { libc::munlockall() };
    } else {
        println!("memory locking not permitted here: the locked case is not checked");
    }
    if ok {
        println!("test trim ... ok");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
