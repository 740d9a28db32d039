//! Network bring-up in the boot environment for network stores (docs/BOOT.md
//! "Network"): every wired interface's link up, then DHCP with busybox udhcpc on every one
//! that has a carrier, at the same time (its hook script /etc/udhcpc/default.script
//! configures the address, route and resolv.conf); or one static IPv4 address
//! (`imprint.net=`). PID 1 runs it before an unattended job on a network store; the TUI
//! runs it when the "Add network store" form opens and before it connects a store.
//! [`ensure_up`] lets both ask at any time: one bring-up at a time, and none when an
//! interface already has an address.

use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set by PID 1 for the TUI in the boot environment to `imprint.net=`'s value (`dhcp`
/// by default). Without it the TUI leaves networking to the operating system.
pub const NET_ENV: &str = "IMPRINT_NET";
/// Serialises bring-ups between the TUIs on tty1 and the serial line.
const LOCK: &str = "/run/imprint/net.lock";
const SYS_NET: &str = "/sys/class/net";
const IP: &str = "/sbin/ip";
/// How long links may take to report a carrier after `ip link set up` (e1000 and real
/// NICs need 1-3 s to negotiate; notes §3).
const LINK_WAIT: Duration = Duration::from_secs(6);

/// How the boot environment gets onto the network (`imprint.net=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Net {
    /// DHCP on every wired interface that has a link (the default).
    #[default]
    Dhcp,
    /// A fixed IPv4 address on one interface.
    Static(StaticNet),
}

/// `imprint.net=IFACE:ADDR/PREFIX[:GATEWAY[:DNS[,DNS...]]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    pub iface: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl Net {
    /// Parses `dhcp` or `IFACE:ADDR/PREFIX[:GATEWAY[:DNS[,DNS...]]]`; `None` when invalid.
    pub fn parse(value: &str) -> Option<Net> {
        if value == "dhcp" {
            return Some(Net::Dhcp);
        }
        let mut parts = value.split(':');
        let iface = parts.next()?;
        let valid_iface = !iface.is_empty()
            && iface.len() <= 15
            && iface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !valid_iface {
            return None;
        }
        let (addr, prefix) = parts.next()?.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p))?;
        let gateway = match parts.next() {
            None | Some("") => None,
            Some(g) => Some(g.parse().ok()?),
        };
        let dns = match parts.next() {
            None | Some("") => Vec::new(),
            Some(d) => d
                .split(',')
                .map(|a| a.parse().ok())
                .collect::<Option<Vec<Ipv4Addr>>>()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Net::Static(StaticNet {
            iface: iface.to_string(),
            addr,
            prefix,
            gateway,
            dns,
        }))
    }
}

/// The `imprint.net=` value [`Net::parse`] reads back (PID 1 hands it to the TUI).
impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Net::Dhcp => f.write_str("dhcp"),
            Net::Static(s) => {
                write!(f, "{}:{}/{}", s.iface, s.addr, s.prefix)?;
                if s.gateway.is_some() || !s.dns.is_empty() {
                    write!(
                        f,
                        ":{}",
                        s.gateway.map(|g| g.to_string()).unwrap_or_default()
                    )?;
                }
                if !s.dns.is_empty() {
                    let dns: Vec<String> = s.dns.iter().map(|d| d.to_string()).collect();
                    write!(f, ":{}", dns.join(","))?;
                }
                Ok(())
            }
        }
    }
}

/// An interface that is on the network: its name and IPv4 address with prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub iface: String,
    pub addr: String,
}

/// `eth0 10.0.2.15/24, eth1 192.168.1.9/24`: what the TUI shows after "network:".
pub fn describe(links: &[Link]) -> String {
    links
        .iter()
        .map(|l| format!("{} {}", l.iface, l.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The [`Net`] PID 1 handed over in [`NET_ENV`], when running in the boot environment.
/// An unreadable value falls back to DHCP, which is what the command line's default is.
pub fn from_env() -> Option<Net> {
    let v = std::env::var(NET_ENV).ok()?;
    Some(Net::parse(v.trim()).unwrap_or_default())
}

/// Like [`bring_up`], but one at a time across processes, and at once when the network
/// is already up: for DHCP, any wired interface with an address; for a static address,
/// that interface with that address.
pub fn ensure_up(net: &Net, say: &mut dyn FnMut(&str)) -> Result<Vec<Link>, String> {
    let _ = fs::create_dir_all(Path::new(LOCK).parent().unwrap_or(Path::new("/")));
    // Without the lock file (a read-only /run) bring-ups may overlap, which udhcpc and
    // ip(8) survive; it only costs time.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .ok();
    if let Some(f) = &lock {
        let _ = f.lock();
    }
    let up = already_up(net);
    if !up.is_empty() {
        return Ok(up);
    }
    bring_up(net, say)
}

fn already_up(net: &Net) -> Vec<Link> {
    match net {
        Net::Dhcp => wired_interfaces(Path::new(SYS_NET))
            .into_iter()
            .filter_map(|iface| address_of(&iface).map(|addr| Link { iface, addr }))
            .collect(),
        Net::Static(s) => {
            let want = format!("{}/{}", s.addr, s.prefix);
            address_of(&s.iface)
                .filter(|a| *a == want)
                .map(|addr| Link {
                    iface: s.iface.clone(),
                    addr,
                })
                .into_iter()
                .collect()
        }
    }
}

/// Gets the machine onto the network as `imprint.net=` says. Returns the configured
/// interfaces, or why none is, in words for a technician. `say` gets progress lines.
pub fn bring_up(net: &Net, say: &mut dyn FnMut(&str)) -> Result<Vec<Link>, String> {
    match net {
        Net::Dhcp => dhcp_all(say),
        Net::Static(s) => static_address(s, say).map(|a| vec![a]),
    }
}

/// Wired Ethernet interfaces under `sys` (/sys/class/net): type 1 = ARPHRD_ETHER, not
/// wireless, backed by a device (no bridge or other virtual interface), sorted.
fn wired_interfaces(sys: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sys)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    let dir = sys.join(n);
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

fn has_carrier(sys: &Path, iface: &str) -> bool {
    fs::read_to_string(sys.join(iface).join("carrier")).is_ok_and(|c| c.trim() == "1")
}

/// The IPv4 address of an interface with its prefix (`10.0.2.15/24`), from
/// `ip -4 -o addr show dev IF`.
fn address_of(iface: &str) -> Option<String> {
    let out = Command::new(IP)
        .args(["-4", "-o", "addr", "show", "dev", iface])
        .stdin(Stdio::null())
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

/// Why DHCP found nothing to ask on, or `None` when some interface has a link.
fn no_link_reason(ifaces: &[String], carrier: &[bool]) -> Option<String> {
    if ifaces.is_empty() {
        return Some(
            "no wired network interface found (is the NIC driver in the initramfs?)".into(),
        );
    }
    if carrier.iter().any(|c| *c) {
        return None;
    }
    Some(format!(
        "no cable on any wired port ({}): plug the network cable in and try again",
        ifaces.join(", ")
    ))
}

/// DHCP on every wired interface with a link, all at once: a lab PC often has two NICs
/// and only one of them is cabled to the network with the server.
fn dhcp_all(say: &mut dyn FnMut(&str)) -> Result<Vec<Link>, String> {
    let sys = Path::new(SYS_NET);
    let ifaces = wired_interfaces(sys);
    if let Some(why) = no_link_reason(&ifaces, &[true]) {
        return Err(why);
    }
    // udhcpc loops forever on "Network is down" unless the link is up first (notes §3),
    // and a carrier shows only after the link is up.
    for iface in &ifaces {
        let _ = ip(&["link", "set", iface, "up"]);
    }
    let deadline = Instant::now() + LINK_WAIT;
    while !ifaces.iter().all(|i| has_carrier(sys, i)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let carrier: Vec<bool> = ifaces.iter().map(|i| has_carrier(sys, i)).collect();
    if let Some(why) = no_link_reason(&ifaces, &carrier) {
        return Err(why);
    }
    let mut up = Vec::new();
    let mut todo = Vec::new();
    for (iface, carrier) in ifaces.iter().zip(carrier) {
        if let Some(addr) = address_of(iface) {
            up.push(Link {
                iface: iface.clone(),
                addr,
            });
        } else if carrier {
            todo.push(iface.clone());
        } else {
            say(&format!(
                "network: {iface}: no link after {} s (cable?); skipped",
                LINK_WAIT.as_secs()
            ));
        }
    }
    // All at once, then waited for in turn: each is bounded by timeout(1).
    let children: Vec<_> = todo
        .iter()
        .map(|iface| {
            Command::new("/usr/bin/timeout")
                .args(["30", "/sbin/udhcpc", "-i", iface])
                .args(["-n", "-q", "-t", "5", "-T", "2", "-S"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect();
    for (iface, child) in todo.iter().zip(children) {
        let ok = child.and_then(|mut c| c.wait()).is_ok_and(|s| s.success());
        match address_of(iface) {
            Some(addr) if ok => {
                say(&format!("network: {iface} has {addr} (DHCP)"));
                up.push(Link {
                    iface: iface.clone(),
                    addr,
                });
            }
            _ => say(&format!("network: no DHCP lease on {iface}")),
        }
    }
    if up.is_empty() {
        Err(format!(
            "no DHCP server answered on {} (set a static address with imprint.net=IFACE:ADDR/PREFIX[:GATEWAY[:DNS]])",
            todo.join(", ")
        ))
    } else {
        Ok(up)
    }
}

/// `imprint.net=IFACE:ADDR/PREFIX[:GATEWAY[:DNS]]`: the address, the default route and
/// /etc/resolv.conf, with ip(8) from busybox.
fn static_address(s: &StaticNet, say: &mut dyn FnMut(&str)) -> Result<Link, String> {
    let sys = Path::new(SYS_NET);
    if !sys.join(&s.iface).exists() {
        return Err(format!(
            "imprint.net: no interface {} (present: {})",
            s.iface,
            wired_interfaces(sys).join(", ")
        ));
    }
    let addr = format!("{}/{}", s.addr, s.prefix);
    ip(&["link", "set", &s.iface, "up"])?;
    ip(&["addr", "flush", "dev", &s.iface])?;
    ip(&["addr", "add", &addr, "dev", &s.iface])?;
    if let Some(gw) = s.gateway {
        let gw = gw.to_string();
        ip(&["route", "replace", "default", "via", &gw, "dev", &s.iface])?;
    }
    if !s.dns.is_empty() {
        let text: String = s.dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        fs::write("/etc/resolv.conf", text)
            .map_err(|e| format!("writing /etc/resolv.conf: {e}"))?;
    }
    let deadline = Instant::now() + LINK_WAIT;
    while !has_carrier(sys, &s.iface) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !has_carrier(sys, &s.iface) {
        say(&format!(
            "network: {}: no link after {} s (cable?); trying anyway",
            s.iface,
            LINK_WAIT.as_secs()
        ));
    }
    let gateway = s
        .gateway
        .map(|g| format!(", gateway {g}"))
        .unwrap_or_default();
    let dns = if s.dns.is_empty() {
        String::new()
    } else {
        let d: Vec<String> = s.dns.iter().map(|d| d.to_string()).collect();
        format!(", DNS {}", d.join(" "))
    };
    say(&format!(
        "network: {} has {addr} (static{gateway}{dns})",
        s.iface
    ));
    Ok(Link {
        iface: s.iface.clone(),
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_value_round_trips_through_display() {
        for v in [
            "dhcp",
            "eth0:10.0.2.15/24",
            "eth1:192.168.1.50/24:192.168.1.1",
            "eth1:192.168.1.50/24:192.168.1.1:192.168.1.2,9.9.9.9",
            "enp3s0:10.0.0.5/16::10.0.0.1",
        ] {
            let n = Net::parse(v).unwrap_or_else(|| panic!("{v} did not parse"));
            assert_eq!(n.to_string(), v);
            assert_eq!(Net::parse(&n.to_string()), Some(n));
        }
        assert_eq!(Net::parse("eth0:10.0.0.5/33"), None);
        assert_eq!(Net::parse("static"), None);
    }

    #[test]
    fn only_wired_ethernet_devices_are_used() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, ty: &str, device: bool, extra: Option<&str>| {
            let dir = d.path().join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("type"), format!("{ty}\n")).unwrap();
            if device {
                fs::create_dir(dir.join("device")).unwrap();
            }
            if let Some(x) = extra {
                fs::create_dir(dir.join(x)).unwrap();
            }
        };
        mk("lo", "772", false, None);
        mk("eth1", "1", true, None);
        mk("eth0", "1", true, None);
        mk("wlan0", "1", true, Some("wireless"));
        mk("wlp2s0", "1", true, Some("phy80211"));
        mk("br0", "1", false, None);
        fs::write(d.path().join("eth1/carrier"), "1\n").unwrap();
        assert_eq!(wired_interfaces(d.path()), ["eth0", "eth1"]);
        assert!(has_carrier(d.path(), "eth1"));
        assert!(!has_carrier(d.path(), "eth0"));
        assert!(wired_interfaces(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn no_cable_and_no_nic_are_told_apart() {
        let two = ["eth0".to_string(), "eth1".to_string()];
        let e = no_link_reason(&two, &[false, false]).unwrap();
        assert!(
            e.starts_with("no cable on any wired port (eth0, eth1)"),
            "{e}"
        );
        assert_eq!(no_link_reason(&two, &[false, true]), None);
        let e = no_link_reason(&[], &[]).unwrap();
        assert!(e.contains("no wired network interface"), "{e}");
    }

    #[test]
    fn links_are_described_as_the_form_shows_them() {
        let links = [
            Link {
                iface: "eth0".into(),
                addr: "10.0.2.15/24".into(),
            },
            Link {
                iface: "eth1".into(),
                addr: "192.168.1.9/24".into(),
            },
        ];
        assert_eq!(describe(&links), "eth0 10.0.2.15/24, eth1 192.168.1.9/24");
    }
}
