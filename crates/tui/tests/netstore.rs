//! The "Add network store" form against a real server: nginx (Debian's package) on
//! 127.0.0.1 serves a store captured here; the App connects through `ops::locations`
//! and the HTTP backend, lists the image, restores it onto a disk file byte for byte,
//! and says in plain words when a URL is not a store or nothing listens.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
mod common;

use common::{file_disk, pump_while};
use tui::{dispatch, Action, App, FixedDisks, Runtime, Screen};

/// nginx in the foreground serving `www` on 127.0.0.1; killed on drop.
struct Nginx {
    port: u16,
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, www: &Path) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log; events {{ worker_connections 64; }}\n\
             http {{ access_log {d}/access.log; client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
            www.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx (Debian package nginx)");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Nginx { port, child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 6 MiB of compressible, non-constant bytes and no partition table: captured whole.
fn disk_bytes() -> Vec<u8> {
    (0..6u32 << 20).map(|i| (i / 4096 % 251) as u8).collect()
}

fn type_text(app: &mut App, rt: &mut Runtime, s: &str) {
    for c in s.chars() {
        dispatch(app, rt, Action::Input(c));
    }
}

/// Fills the form for `http://127.0.0.1:PORT/PATH` and waits for the answer.
fn connect_http(app: &mut App, rt: &mut Runtime, port: u16, path: &str) {
    if app.screen == Screen::AddStore {
        dispatch(app, rt, Action::Back);
    }
    dispatch(app, rt, Action::AddStore);
    assert_eq!((app.screen, app.net.field), (Screen::AddStore, 0));
    while app.net.kind != 2 {
        dispatch(app, rt, Action::Right);
    }
    dispatch(app, rt, Action::Down);
    while !app.net.host.is_empty() {
        dispatch(app, rt, Action::Erase);
    }
    type_text(app, rt, &format!("127.0.0.1:{port}"));
    dispatch(app, rt, Action::Down);
    while !app.net.path.is_empty() {
        dispatch(app, rt, Action::Erase);
    }
    type_text(app, rt, path);
    dispatch(app, rt, Action::Select);
    assert!(app.net.connecting.is_some(), "{:?}", app.net.error);
    pump_while(app, rt, |a| a.net.connecting.is_some());
}

#[test]
fn an_http_store_added_on_the_form_lists_its_image_and_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    let store = www.join("store");
    std::fs::create_dir_all(www.join("nothing")).unwrap();
    std::fs::write(www.join("nothing/index.html"), "hello").unwrap();
    let src = dir.path().join("source.img");
    let dst = dir.path().join("target.img");
    let bytes = disk_bytes();
    std::fs::write(&src, &bytes).unwrap();
    std::fs::write(&dst, vec![0x5au8; bytes.len()]).unwrap();
    ops::capture(
        &ops::CaptureRequest {
            source: src.clone(),
            store: store.clone(),
            name: "golden".into(),
            description: "served by nginx".into(),
            level: 3,
            chunk_size: imaging::DEFAULT_CHUNK_SIZE,
            force: false,
            threads: 0,
        },
        &mut imaging::NullSink,
    )
    .unwrap();
    let nginx = Nginx::start(dir.path(), &www);

    let mut rt = Runtime::new(
        Box::new(FixedDisks(vec![file_disk(&dst)])),
        Vec::<PathBuf>::new(),
    );
    let mut app = App::new();
    let snap = rt.snapshot(true);
    dispatch(&mut app, &mut rt, snap);

    // A folder without imprint-store.json: said plainly, the form stays.
    connect_http(&mut app, &mut rt, nginx.port, "nothing");
    assert_eq!(app.screen, Screen::AddStore);
    let e = app.net.error.clone().unwrap();
    assert!(e.contains("not an Imprint store"), "{e}");

    // Nothing listening on a port: refused, and the form stays.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    connect_http(&mut app, &mut rt, closed, "store");
    let e = app.net.error.clone().unwrap();
    assert!(e.contains(&format!("127.0.0.1:{closed}")), "{e}");
    assert!(e.to_lowercase().contains("refused"), "{e}");

    // The store: home lists it with its image, read-only.
    connect_http(&mut app, &mut rt, nginx.port, "store");
    assert_eq!(app.screen, Screen::Home, "{:?}", app.net.error);
    let url = format!("http://127.0.0.1:{}/store/", nginx.port);
    let row = app
        .stores
        .iter()
        .find(|s| s.label.as_deref() == Some(&url))
        .unwrap();
    assert_eq!(row.images().len(), 1);
    assert_eq!(row.images()[0].name, "golden");
    assert!(row.read_only.is_some() && !row.writable());
    // Still there after the periodic re-read of the stores.
    let snap = rt.snapshot(true);
    dispatch(&mut app, &mut rt, snap);
    assert!(app
        .stores
        .iter()
        .any(|s| s.label.as_deref() == Some(&url) && s.images().len() == 1));

    // Restore from it onto the disk file with the typed confirmation.
    dispatch(&mut app, &mut rt, Action::Restore);
    dispatch(&mut app, &mut rt, Action::Select);
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::RestoreTarget);
    let check = &app.restore.checks[0];
    assert_eq!(check.refusal, None, "an HTTP store protects no local disk");
    dispatch(&mut app, &mut rt, Action::Select);
    dispatch(&mut app, &mut rt, Action::Select);
    assert_eq!(app.screen, Screen::RestoreConfirm, "{:?}", app.popup);
    type_text(&mut app, &mut rt, "ERASE");
    dispatch(&mut app, &mut rt, Action::Select);
    pump_while(&mut app, &mut rt, |a| a.screen == Screen::Progress);
    let r = app.result.clone().unwrap();
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert!(
        std::fs::read(&dst).unwrap() == bytes,
        "restored bytes differ"
    );
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    assert!(log.contains("\" 206 "), "range requests reached nginx");
}
