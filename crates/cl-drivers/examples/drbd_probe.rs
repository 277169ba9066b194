//! Tries the DRBD drivers by hand on a real DRBD node (the VM lab's guests): one driver call per
//! run, its result printed as Debug. Not used by the project; a tool to check the drivers against
//! a real kernel.
//!
//! ```text
//! drbd_probe render NAME MINOR HOST1 DISK1 IP1 HOST2 DISK2 IP2 PORT HANDLER [stonith] [dzc]
//! drbd_probe up|down|primary|primary-force|secondary|outdate|connect|connect-discard|
//!            disconnect|resume-io|has-md|create-md|dstate RES
//! drbd_probe snapshot | version | events N
//! drbd_probe drbd-handler NAME      (as a DRBD handler: prints what DRBD passed, exits 0)
//! drbd_probe vg VG | lv VG LV | lv-create VG LV BYTES | probe DEVICE [RES]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use cl_drivers::drbd::{self, conf, Drbd, Events2};
use cl_drivers::lvm::Lvm;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Drbd::system();
    let res = a.get(1).copied().unwrap_or("");
    let out: Result<String, String> = match a.first().copied().unwrap_or("") {
        "render" if a.len() >= 11 => render(&a),
        "up" => d.up(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "down" => d.down(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "primary" => d.primary(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "primary-force" => {
            d.primary_force(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string())
        }
        "secondary" => d.secondary(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "outdate" => {
            let r = d.outdate(res);
            Ok(format!("{:?} <- {r:?}", drbd::outdate_answer(&r)))
        }
        "connect" => d.connect(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "connect-discard" => {
            d.connect_discard_my_data(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string())
        }
        "disconnect" => d.disconnect(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "resume-io" => d.resume_io(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "has-md" => d.has_metadata(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "create-md" => d.create_md(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "dstate" => d.disk_state(res).map(|o| format!("{o:?}")).map_err(|e| e.to_string()),
        "snapshot" => d.snapshot().map(|s| format!("{s:#?}")).map_err(|e| e.to_string()),
        "version" => Ok(format!(
            "kernel has drbd: {}, kernel: {:?}, utils: {:?}",
            drbd::kernel_has_drbd(),
            drbd::drbd_version(),
            d.utils_version()
        )),
        "events" => events(&d, res.parse().unwrap_or(10)),
        "drbd-handler" => {
            drbd::handler_env().map(|c| format!("handler {res}: {c:?}")).map_err(|e| e.to_string())
        }
        "vg" => Lvm::system()
            .vg_info(res)
            .map(|i| format!("{i:?} free={:?}", Lvm::system().vg_free_bytes(res)))
            .map_err(|e| e.to_string()),
        "lv" => Lvm::system()
            .lv_size_bytes(res, a.get(2).copied().unwrap_or(""))
            .map(|o| format!("{o:?}"))
            .map_err(|e| e.to_string()),
        "lv-create" => Lvm::system()
            .lv_create(
                res,
                a.get(2).copied().unwrap_or(""),
                a.get(3).and_then(|s| s.parse().ok()).unwrap_or(0),
            )
            .map(|o| format!("{o:?}"))
            .map_err(|e| e.to_string()),
        "probe" => Lvm::system()
            .device_holds_data(res.as_ref(), a.get(2).map(|r| (&d, *r)))
            .map(|o| format!("{o:?}"))
            .map_err(|e| e.to_string()),
        _ => Err("usage: see the source".into()),
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(a: &[&str]) -> Result<String, String> {
    let node = |i: usize| -> Result<conf::NodeEndpoint, String> {
        Ok(conf::NodeEndpoint {
            hostname: a[i].into(),
            backing_disk: a[i + 1].into(),
            address: a[i + 2].parse().map_err(|e| format!("{e}"))?,
            port: a[9].parse().map_err(|e| format!("{e}"))?,
        })
    };
    let resource = conf::DrbdResource {
        name: a[1].into(),
        minor: a[2].parse().map_err(|e| format!("{e}"))?,
        nodes: vec![node(3)?, node(6)?],
        fencing: if a.contains(&"stonith") {
            conf::Fencing::ResourceAndStonith
        } else {
            conf::Fencing::ResourceOnly
        },
        after_sb: if a.contains(&"dzc") {
            conf::AfterSplitBrain::DiscardZeroChanges
        } else {
            conf::AfterSplitBrain::Disconnect
        },
        resync_rate_kib: 40960,
        ping_int: Duration::from_secs(2),
        ping_timeout: Duration::from_millis(500),
        connect_int: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
    };
    let spec = conf::ResourceSpec { resource, handler: a[10].into() };
    conf::render(&spec).map_err(|e| e.to_string())
}

fn events(d: &Drbd, n: usize) -> Result<String, String> {
    let mut reader = d.events2().map_err(|e| e.to_string())?;
    let mut parser = Events2::new();
    let mut out = String::new();
    for _ in 0..n {
        match reader.next_line() {
            Ok(Some(line)) => {
                let ev = parser.handle_line(&line);
                out.push_str(&format!("{ev:?}\n"));
            }
            Ok(None) => {
                out.push_str(&format!("end: {}\n", reader.stderr_tail()));
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    out.push_str(&format!("{:#?}", parser.volumes()));
    Ok(out)
}
