//! HTTP stores (issue 8) end to end through the `imprint` binary against a real nginx on
//! 127.0.0.1 (Debian's nginx package): listing, info, verify and restore read a store
//! captured here; the reads are range requests (206 in nginx's access log); a proxy that
//! cuts connections mid-response does not change the restored bytes; a URL that is not
//! a store says so; nginx stopped mid-restore fails the restore with the first MiB
//! zeroed, and a rerun after nginx is back resumes it (FORMAT.md §8).
//!
//! All traffic stays on 127.0.0.1. nginx runs in the foreground (`daemon off;`,
//! `master_process off;`, so it needs no user switch) with its config, pid file and logs
//! in a temporary directory, and is killed by a `Drop` guard; so is the proxy.

mod common;

use common::{imprint, ok, p, text, Rng, MIB};
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const DISK_SIZE: u64 = 40 * MIB;

/// A disk file of mostly incompressible bytes (so every chunk is a real range read),
/// with a few all-zero chunks.
fn make_source(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let mut rng = Rng::new(1);
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..DISK_SIZE / MIB {
        if i % 7 == 3 {
            buf.fill(0);
        } else {
            rng.fill(&mut buf);
        }
        f.write_all(&buf).unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx serving `www` on 127.0.0.1:port; `/slow/` serves the same files at 4 MiB/s per
/// connection, so a restore lasts long enough to be interrupted.
struct Nginx {
    dir: PathBuf,
    port: u16,
    scheme: &'static str,
    child: Option<Child>,
}

impl Nginx {
    /// With `tls`, serves HTTPS with a certificate for 127.0.0.1 signed by a CA made
    /// here (`DIR/ca.pem`), which nothing trusts unless told to.
    fn start(dir: &Path, www: &Path, tls: bool) -> Nginx {
        let port = free_port();
        let ssl = if tls {
            make_certificates(dir);
            format!(
                " ssl;\n    ssl_certificate {d}/server.pem;\n    ssl_certificate_key {d}/server.key",
                d = dir.display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port}{ssl};\n    root {w};\n\
             location /slow/ {{ alias {w}/; limit_rate 4m; }}\n  }}\n}}\n",
            d = dir.display(),
            w = www.display()
        );
        fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut n = Nginx {
            dir: dir.into(),
            port,
            scheme: if tls { "https" } else { "http" },
            child: None,
        };
        n.restart();
        n
    }

    fn restart(&mut self) {
        let child = Command::new("nginx")
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-p")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx (Debian package nginx)");
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "nginx did not listen on 127.0.0.1:{}: {}",
            self.port,
            fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}/{path}", self.scheme, self.port)
    }

    fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy on 127.0.0.1 in front of nginx that cuts every `nth` connection after
/// `cut_after` bytes of response, and records how many connections were open at once.
struct FlakyProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
}

impl FlakyProxy {
    fn start(upstream: u16, nth: usize, cut_after: usize) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let (s, c, o, m) = (stop.clone(), cuts.clone(), open.clone(), max_open.clone());
        thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let limit = if n % nth == nth - 1 {
                    Some(cut_after)
                } else {
                    None
                };
                let (c, o, m) = (c.clone(), o.clone(), m.clone());
                thread::spawn(move || {
                    m.fetch_max(o.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    pipe(client, server, limit, &c);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FlakyProxy {
            port,
            stop,
            cuts,
            max_open,
        }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies client → server on a thread and server → client here, closing both sockets
/// after `limit` response bytes when a limit is given.
fn pipe(client: TcpStream, server: TcpStream, limit: Option<usize>, cuts: &AtomicUsize) {
    let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut c_r, &mut s_w);
        let _ = s_w.shutdown(Shutdown::Write);
    });
    let (mut s_r, mut c_w) = (server, client);
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match s_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n >= l => {
                let _ = c_w.write_all(&buf[..l - sent]);
                cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            _ => n,
        };
        if c_w.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = c_w.shutdown(Shutdown::Both);
    let _ = s_r.shutdown(Shutdown::Both);
    let _ = up.join();
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    source: PathBuf,
    nginx: Nginx,
}

/// A CA (`ca.pem`) and a server certificate for IP 127.0.0.1 signed by it, with openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (Debian package openssl)");
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "2", "-subj", "/CN=imprint test CA"],
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    ]
    .concat());
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

fn setup() -> Setup {
    setup_with(false)
}

fn setup_with(tls: bool) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let source = root.join("source.img");
    make_source(&source);
    let www = root.join("www");
    fs::create_dir_all(&www).unwrap();
    let store = www.join("store");
    ok(imprint(&[
        "capture",
        p(&source),
        p(&store),
        "--name",
        "lab pc",
    ]));
    fs::create_dir_all(root.join("nothing")).unwrap();
    let nginx = Nginx::start(&root, &www, tls);
    Setup {
        _tmp: tmp,
        root,
        source,
        nginx,
    }
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    x.len() == y.len() && x == y
}

#[test]
fn http_store_lists_describes_verifies_and_restores_with_range_reads() {
    let s = setup();
    let url = s.nginx.url("store/");
    let o = ok(imprint(&["images", &url]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("lab pc"),
        "{}",
        text(&o)
    );
    let o = ok(imprint(&["info", &url, "lab pc"]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("source.img"),
        "{}",
        text(&o)
    );
    ok(imprint(&["verify", &url, "lab pc"]));

    let target = s.root.join("target.img");
    ok(imprint(&["restore", &url, "lab pc", p(&target), "--yes"]));
    assert!(
        same_bytes(&s.source, &target),
        "restored disk differs from the source"
    );

    let log = s.nginx.access_log();
    let ranged = log
        .lines()
        .filter(|l| l.contains(".pack HTTP/1.1\" 206 "))
        .count();
    assert!(ranged >= 30, "expected range reads of packs, log:\n{log}");
    assert!(
        !log.lines().any(|l| l.contains(".pack HTTP/1.1\" 200 ")),
        "a whole pack was downloaded:\n{log}"
    );
}

#[test]
fn a_url_that_is_not_a_store_says_so() {
    let s = setup();
    let o = imprint(&["images", &s.nginx.url("nothing/")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not an Imprint store"), "{}", text(&o));
}

#[test]
fn capture_into_an_http_store_is_refused() {
    let s = setup();
    let o = imprint(&[
        "capture",
        p(&s.source),
        &s.nginx.url("store/"),
        "--name",
        "other",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP stores are read-only"),
        "{}",
        text(&o)
    );
}

#[test]
fn restore_through_connections_cut_mid_response_is_byte_identical() {
    let s = setup();
    let proxy = FlakyProxy::start(s.nginx.port, 2, 1_500_000);
    let url = format!("http://127.0.0.1:{}/store/", proxy.port);
    let target = s.root.join("target.img");
    ok(imprint(&["restore", &url, "lab pc", p(&target), "--yes"]));
    assert!(
        same_bytes(&s.source, &target),
        "restored disk differs from the source"
    );
    assert!(
        proxy.cuts.load(Ordering::SeqCst) >= 2,
        "the proxy never cut a response"
    );
    // The restore workers fetch chunks in parallel over several pooled connections.
    assert!(
        proxy.max_open.load(Ordering::SeqCst) >= 2,
        "chunks were fetched over one connection at a time"
    );
}

#[test]
fn nginx_stopped_mid_restore_fails_it_unbootable_and_a_rerun_resumes() {
    let mut s = setup();
    let url = s.nginx.url("slow/store/");
    let target = s.root.join("target.img");
    let child = Command::new(env!("CARGO_BIN_EXE_imprint"))
        .args(["restore", &url, "lab pc", p(&target), "--yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop nginx once a few chunks have been served.
    let t0 = Instant::now();
    while s
        .nginx
        .access_log()
        .matches(".pack HTTP/1.1\" 206 ")
        .count()
        < 6
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "restore never read packs"
        );
        thread::sleep(Duration::from_millis(20));
    }
    s.nginx.stop();
    let o = child.wait_with_output().unwrap();
    assert!(
        !o.status.success(),
        "restore succeeded without a server: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("gave up after 6 tries"), "{err}");
    let first = &fs::read(&target).unwrap()[..MIB as usize];
    assert!(first.iter().all(|&b| b == 0), "the first MiB is not zeroed");

    s.nginx.restart();
    let o = ok(imprint(&[
        "--json",
        "restore",
        &url,
        "lab pc",
        p(&target),
        "--yes",
    ]));
    assert!(
        same_bytes(&s.source, &target),
        "rerun did not complete the disk"
    );
    // Chunks written before the stop were compared, not fetched again.
    let result = common::json_result(&o);
    assert_eq!(result["delta"], true, "{result}");
    assert!(
        result["unchanged_chunks"].as_u64().unwrap_or(0) > 0,
        "{result}"
    );
}

#[test]
fn https_store_needs_its_ca_trusted_and_then_restores() {
    let s = setup_with(true);
    let url = s.nginx.url("store/");
    assert!(url.starts_with("https://"));
    let run = |args: &[&str], ca: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_imprint"));
        c.args(args)
            .stdin(Stdio::null())
            .env_remove("IMPRINT_HTTP_CA");
        if let Some(ca) = ca {
            c.env("IMPRINT_HTTP_CA", ca);
        }
        c.output().unwrap()
    };
    // An unknown issuer is refused at once, not retried for seconds.
    let t0 = Instant::now();
    let o = run(&["images", &url], None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        text(&o)
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    let ca = s.root.join("ca.pem");
    let o = ok(run(&["images", &url], Some(&ca)));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("lab pc"),
        "{}",
        text(&o)
    );
    // The same CA given with --ca-cert instead of the environment.
    let o = ok(run(&["--ca-cert", p(&ca), "images", &url], None));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("lab pc"),
        "{}",
        text(&o)
    );
    // A --ca-cert file that is not a certificate fails before any request, naming it.
    let o = run(&["images", &url, "--ca-cert", p(&s.source)], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ca-cert"),
        "{}",
        text(&o)
    );
    let target = s.root.join("target.img");
    ok(run(
        &["restore", &url, "lab pc", p(&target), "--yes"],
        Some(&ca),
    ));
    assert!(
        same_bytes(&s.source, &target),
        "restored disk differs from the source"
    );
}
