//! Network bring-up for network stores (`imprint.net=`, docs/BOOT.md): every wired
//! interface's link up, then DHCP with busybox udhcpc on every one that has a carrier, at
//! the same time (its hook script /etc/udhcpc/default.script configures the address,
//! route and resolv.conf); or one static IPv4 address.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmdline::{Net, StaticNet};
use crate::console::Console;
use crate::process;

const IP: &str = "/sbin/ip";
/// How long links may take to report a carrier after `ip link set up` (e1000 and real
/// NICs need 1-3 s to negotiate; notes §3).
const LINK_WAIT: Duration = Duration::from_secs(6);

/// Wired Ethernet interfaces the kernel knows (type 1 = ARPHRD_ETHER, not wireless, not a
/// bridge or other virtual device), sorted.
fn wired_interfaces() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    let dir = Path::new("/sys/class/net").join(n);
                    fs::read_to_string(dir.join("type")).is_ok_and(|t| t.trim() == "1")
                        && !dir.join("wireless").exists()
                        && !dir.join("phy80211").exists()
                        && dir.join("device").exists()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn has_carrier(iface: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{iface}/carrier")).is_ok_and(|c| c.trim() == "1")
}

/// The IPv4 address of an interface with its prefix (`10.0.2.15/24`), from
/// `ip -4 -o addr show dev IF`.
fn address_of(iface: &str) -> Option<String> {
    let out = Command::new(IP)
        .args(["-4", "-o", "addr", "show", "dev", iface])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next().map(str::to_string)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(IP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Gets the machine onto the network as `imprint.net=` says. Returns the configured
/// interfaces as (interface, address/prefix), or why none is.
pub fn bring_up(net: &Net, console: &Console) -> Result<Vec<(String, String)>, String> {
    match net {
        Net::Dhcp => dhcp_all(console),
        Net::Static(s) => static_address(s, console).map(|a| vec![a]),
    }
}

/// DHCP on every wired interface with a link, all at once: a lab PC often has two NICs
/// and only one of them is cabled to the network with the server.
fn dhcp_all(console: &Console) -> Result<Vec<(String, String)>, String> {
    let ifaces = wired_interfaces();
    if ifaces.is_empty() {
        return Err(
            "no wired network interface found (is the NIC driver in the initramfs?)".into(),
        );
    }
    // udhcpc loops forever on "Network is down" unless the link is up first (notes §3),
    // and a carrier shows only after the link is up.
    for iface in &ifaces {
        let _ = ip(&["link", "set", iface, "up"]);
    }
    let deadline = Instant::now() + LINK_WAIT;
    while !ifaces.iter().all(|i| has_carrier(i)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut up = Vec::new();
    let mut todo = Vec::new();
    for iface in &ifaces {
        if let Some(addr) = address_of(iface) {
            up.push((iface.clone(), addr));
        } else if has_carrier(iface) {
            todo.push(iface.clone());
        } else {
            console.say(&format!(
                "imprint: network: {iface}: no link after {} s (cable?); skipped",
                LINK_WAIT.as_secs()
            ));
        }
    }
    let mut cmds: Vec<Command> = todo
        .iter()
        .map(|iface| {
            let mut c = Command::new("/usr/bin/timeout");
            c.args(["30", "/sbin/udhcpc", "-i", iface])
                .args(["-n", "-q", "-t", "5", "-T", "2", "-S"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        })
        .collect();
    for (iface, status) in todo.iter().zip(process::run_all(&mut cmds)) {
        match (status, address_of(iface)) {
            (Ok(s), Some(addr)) if s.success() => {
                console.say(&format!("imprint: network: {iface} has {addr} (DHCP)"));
                up.push((iface.clone(), addr));
            }
            _ => console.say(&format!("imprint: network: no DHCP lease on {iface}")),
        }
    }
    if up.is_empty() {
        Err(format!(
            "no interface got a DHCP lease (tried {}; set a static address with imprint.net=IFACE:ADDR/PREFIX[:GATEWAY[:DNS]])",
            ifaces.join(", ")
        ))
    } else {
        Ok(up)
    }
}

/// `imprint.net=IFACE:ADDR/PREFIX[:GATEWAY[:DNS]]`: the address, the default route and
/// /etc/resolv.conf, with ip(8) from busybox.
fn static_address(s: &StaticNet, console: &Console) -> Result<(String, String), String> {
    if !Path::new("/sys/class/net").join(&s.iface).exists() {
        return Err(format!(
            "imprint.net: no interface {} (present: {})",
            s.iface,
            wired_interfaces().join(", ")
        ));
    }
    let addr = format!("{}/{}", s.addr, s.prefix);
    ip(&["link", "set", &s.iface, "up"])?;
    ip(&["addr", "flush", "dev", &s.iface])?;
    ip(&["addr", "add", &addr, "dev", &s.iface])?;
    if let Some(gw) = s.gateway {
        ip(&[
            "route",
            "replace",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            &s.iface,
        ])?;
    }
    if !s.dns.is_empty() {
        let text: String = s.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        fs::write("/etc/resolv.conf", text)
            .map_err(|e| format!("writing /etc/resolv.conf: {e}"))?;
    }
    let deadline = Instant::now() + LINK_WAIT;
    while !has_carrier(&s.iface) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !has_carrier(&s.iface) {
        console.say(&format!(
            "imprint: network: {}: no link after {} s (cable?); trying anyway",
            s.iface,
            LINK_WAIT.as_secs()
        ));
    }
    console.say(&format!(
        "imprint: network: {} has {addr} (static{}{})",
        s.iface,
        s.gateway
            .map(|g| format!(", gateway {g}"))
            .unwrap_or_default(),
        if s.dns.is_empty() {
            String::new()
        } else {
            format!(
                ", DNS {}",
                s.dns
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    ));
    Ok((s.iface.clone(), addr))
}
