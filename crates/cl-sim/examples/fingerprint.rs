use cl_sim::{run, Options, Protection};
fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    for p in Protection::ALL {
        for seed in 0..n {
            let o = run(seed, Options::new(p));
            println!("{p:?} {seed} {} {} {}", o.events, o.documented, o.violations.len());
        }
    }
}
