//! Network bring-up for network stores: links up, DHCP with busybox udhcpc (its hook
//! script /etc/udhcpc/default.script configures the address, route and resolv.conf).

use std::fs;
use std::net::{IpAddr, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::console::Console;
use crate::process;

/// Ethernet interfaces the kernel knows (type 1 = ARPHRD_ETHER), sorted.
fn ethernet_interfaces() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    fs::read_to_string(format!("/sys/class/net/{n}/type"))
                        .is_ok_and(|t| t.trim() == "1")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The IPv4 address of an interface, from `ip -4 -o addr show dev IF`.
fn address_of(iface: &str) -> Option<String> {
    let out = Command::new("/sbin/ip")
        .args(["-4", "-o", "addr", "show", "dev", iface])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words
        .next()
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

/// Gets a DHCP lease on the first interface that answers; returns (interface, address).
/// Already configured interfaces are reused.
pub fn dhcp(console: &Console) -> Option<(String, String)> {
    let ifaces = ethernet_interfaces();
    if ifaces.is_empty() {
        console.say("imprint: no network interface found (is the NIC driver in the initramfs?)");
        return None;
    }
    for iface in &ifaces {
        if let Some(addr) = address_of(iface) {
            return Some((iface.clone(), addr));
        }
        // udhcpc loops forever on "Network is down" unless the link is up first (notes §3).
        let _ = process::run(Command::new("/sbin/ip").args(["link", "set", iface, "up"]));
        let status = process::run(
            Command::new("/usr/bin/timeout")
                .args([
                    "30",
                    "/sbin/udhcpc",
                    "-i",
                    iface,
                    "-n",
                    "-q",
                    "-t",
                    "5",
                    "-T",
                    "2",
                    "-S",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        if status.is_ok_and(|s| s.success()) {
            if let Some(addr) = address_of(iface) {
                console.say(&format!("imprint: network: {iface} has {addr} (DHCP)"));
                return Some((iface.clone(), addr));
            }
        }
        console.say(&format!("imprint: network: no DHCP lease on {iface}"));
    }
    None
}

/// Resolves a server name (or passes an address through); the kernel's SMB client needs
/// the address itself.
pub fn resolve(server: &str) -> Option<IpAddr> {
    if let Ok(ip) = server.parse() {
        return Some(ip);
    }
    for _ in 0..3 {
        if let Ok(mut addrs) = (server, 445).to_socket_addrs() {
            if let Some(a) = addrs.next() {
                return Some(a.ip());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}
