//! Helpers of the browse tests: a capture into a fresh store, and a real nginx.
#![allow(dead_code)]

use imaging::Store;
use std::path::Path;
use std::sync::Arc;

/// Captures `source` (a disk or filesystem image file) into the store at `store` as
/// `name`, and opens that store.
pub fn capture(source: &Path, store: &Path, name: &str) -> Arc<Store> {
    let req = ops::CaptureRequest {
        source: source.to_path_buf(),
        store: store.to_path_buf(),
        name: name.into(),
        description: String::new(),
        level: 3,
        chunk_size: imaging::DEFAULT_CHUNK_SIZE,
        force: false,
        threads: 2,
    };
    ops::capture(&req, &mut imaging::NullSink).expect("capture");
    Arc::new(Store::open(store).unwrap())
}

/// Debian's nginx serving `root` on a free port of 127.0.0.1 (foreground, no master,
/// files under `dir`); killed on drop. `None` when nginx is not installed.
pub struct Nginx(std::process::Child, pub u16);

impl Nginx {
    pub fn serve(dir: &Path, root: &Path) -> Option<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let d = dir.display();
        let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("{t}_temp_path {d}/{t};"))
            .collect();
        let conf = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{}}\nhttp {{ access_log {d}/access.log; {temp}\n\
             server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
            root.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).ok()?;
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let n = Nginx(child, port);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(n);
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        None
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`ranges`] once it exceeds `above`, or after 5 s whatever it is: nginx writes a
/// request's log line after the response has gone, so the client can be faster.
pub fn ranges_above(dir: &Path, prefix: &str, above: usize) -> usize {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = ranges(dir, prefix);
        if n > above || std::time::Instant::now() > end {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The number of range requests (206) nginx answered for paths under `prefix`.
pub fn ranges(dir: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" 206 ") && l.contains(prefix))
        .count()
}
