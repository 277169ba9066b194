//! The systemd units: one text for `linuxha install` and for the packages.

use std::path::Path;

/// A systemd unit linuxha ships: its file name and its text.
pub struct Unit {
    /// The unit's file name, e.g. `linuxha-cldaemon.service`.
    pub name: &'static str,
    /// The unit file's content.
    pub text: String,
}

/// The units, with the daemons started from `<sbin>/cldaemon` and `<sbin>/clarbd`.
///
/// cldaemon is not sandboxed: the applications' start and stop scripts, monitors, mounts,
/// DRBD, VIPs and fence agents all run under it and would inherit any sandbox (read-only
/// file systems, no module loading, no realtime priority for the heartbeats). clarbd, on the
/// third host, needs only UDP (a port below 1024 if so configured), its configuration, a log
/// and a run directory, and is confined.
/// Every daemon is a child of its unit's main process and inherits `LimitNOFILE`: connections
/// that pile up must not leave them unable to accept.
pub fn units(sbin: &Path) -> Vec<Unit> {
    let cldaemon = sbin.join("cldaemon");
    let clarbd = sbin.join("clarbd");
    vec![
        Unit {
            name: "linuxha-cldaemon.service",
            text: format!(
                "[Unit]\n\
                 Description=linuxha node manager (cldaemon)\n\
                 Documentation=man:cldaemon(8) man:clconf.xml(5)\n\
                 After=network-online.target\n\
                 Wants=network-online.target\n\
                 \n\
                 [Service]\n\
                 Type=simple\n\
                 ExecStart={} --foreground\n\
                 Restart=on-failure\n\
                 RestartSec=1\n\
                 KillMode=process\n\
                 LimitNOFILE=65536\n\
                 TasksMax=infinity\n\
                 \n\
                 [Install]\n\
                 WantedBy=multi-user.target\n",
                cldaemon.display()
            ),
        },
        Unit {
            name: "linuxha-clarbd.service",
            text: format!(
                "[Unit]\n\
                 Description=linuxha lease arbitrator (clarbd, on a third host)\n\
                 Documentation=man:clarbd(8)\n\
                 After=network-online.target\n\
                 Wants=network-online.target\n\
                 \n\
                 [Service]\n\
                 Type=simple\n\
                 ExecStart={} --foreground\n\
                 Restart=on-failure\n\
                 RestartSec=1\n\
                 LimitNOFILE=65536\n\
                 LogsDirectory=cluster\n\
                 RuntimeDirectory=cluster\n\
                 RuntimeDirectoryPreserve=yes\n\
                 CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
                 NoNewPrivileges=yes\n\
                 ProtectSystem=strict\n\
                 ProtectHome=yes\n\
                 PrivateTmp=yes\n\
                 PrivateDevices=yes\n\
                 ProtectKernelTunables=yes\n\
                 ProtectKernelModules=yes\n\
                 ProtectKernelLogs=yes\n\
                 ProtectControlGroups=yes\n\
                 ProtectClock=yes\n\
                 ProtectHostname=yes\n\
                 RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
                 RestrictNamespaces=yes\n\
                 RestrictRealtime=yes\n\
                 RestrictSUIDSGID=yes\n\
                 LockPersonality=yes\n\
                 MemoryDenyWriteExecute=yes\n\
                 SystemCallArchitectures=native\n\
                 \n\
                 [Install]\n\
                 WantedBy=multi-user.target\n",
                clarbd.display()
            ),
        },
    ]
}
