//! Where a store's bytes come from when reading: a local directory, or a static HTTP(S)
//! server (FORMAT.md §9). Only the reader side goes through here; a capture writes to a
//! local directory (a mounted share counts as local).
//!
//! Paths given to a backend are relative to the store root, with `/` separators
//! (`packs/<id>.idx`, `images/NAME.json`).

use crate::io::{direct_twin, read_span, IoBuf};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Read access to the files of a store.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The whole file. A missing file is `io::ErrorKind::NotFound`.
    fn read(&self, rel: &str) -> io::Result<Vec<u8>>;
    /// Exactly `buf.len()` bytes at `offset`; a short file is `UnexpectedEof`.
    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// [`Backend::read_at`] into a new buffer of `len` bytes (a chunk's stored bytes).
    fn read_span(&self, rel: &str, offset: u64, len: usize) -> io::Result<IoBuf> {
        // Every byte is read below (or the read fails).
        let mut buf = IoBuf::for_overwrite(len);
        self.read_at(rel, offset, &mut buf)?;
        Ok(buf)
    }
    /// File names in directory `dir` (a missing directory lists nothing).
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// The store's location for messages (never carries a password).
    fn describe(&self) -> String;
}

/// A store directory on a local (or mounted) filesystem. Listing reads the directory
/// itself, which is authoritative; the `index.list` files are not consulted.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    handles: Mutex<HashMap<String, Arc<Handle>>>,
}

/// An open file of the store, with its direct-I/O twin where the file system allows one.
type Handle = (File, Option<File>);

impl LocalBackend {
    pub fn new(root: &Path) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            handles: Mutex::new(HashMap::new()),
        }
    }

    fn handle(&self, rel: &str) -> io::Result<Arc<Handle>> {
        let mut h = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = h.get(rel) {
            return Ok(f.clone());
        }
        let plain = File::open(self.root.join(rel))?;
        let direct = direct_twin(&plain, false);
        let f = Arc::new((plain, direct));
        h.insert(rel.to_string(), f.clone());
        Ok(f)
    }
}

impl Backend for LocalBackend {
    fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        fs::read(self.root.join(rel))
    }

    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.handle(rel)?.0.read_exact_at(buf, offset)
    }

    /// Skips the page cache where it can: a restore reads each stored chunk once, and
    /// the kernel's copy out of the cache was a sixth of its CPU (docs/PERFORMANCE.md).
    fn read_span(&self, rel: &str, offset: u64, len: usize) -> io::Result<IoBuf> {
        let h = self.handle(rel)?;
        read_span(&h.0, h.1.as_ref(), offset, len)
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let rd = match fs::read_dir(self.root.join(dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut v = Vec::new();
        for e in rd {
            if let Some(n) = e?.file_name().to_str() {
                v.push(n.to_string());
            }
        }
        Ok(v)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// The file a writer keeps in each store directory so readers without directory
/// listings (HTTP) know its files (FORMAT.md §9).
pub const INDEX_LIST: &str = "index.list";

/// Tries per request, and the backoff before each retry: 0.2 s doubling up to 5 s, so a
/// server that stays away fails a read after about 11 s.
const TRIES: u32 = 6;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest whole file read into memory (maps of multi-terabyte disks are ~100 MB).
const MAX_WHOLE_FILE: u64 = 1 << 31;

/// A store on a static HTTP(S) server, read with range requests over one connection
/// pool shared by every reader thread. Nothing is written to disk.
pub struct HttpBackend {
    /// Ends with `/`.
    base: String,
    agent: ureq::Agent,
}

impl fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackend")
            .field("base", &self.base)
            .finish()
    }
}

/// True for `http://` and `https://` locations.
pub fn is_http(location: &str) -> bool {
    let l = location.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

impl HttpBackend {
    /// `url` is the store's directory; a missing trailing `/` is added. The certificates
    /// in the file named by `IMPRINT_HTTP_CA` and those given to [`trust_ca_file`] are
    /// trusted besides the system's CA certificates.
    pub fn new(url: &str) -> io::Result<HttpBackend> {
        let mut base = url.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let authority = base.split("://").nth(1).and_then(|r| r.split('/').next());
        if authority.is_none_or(|a| a.is_empty() || a.contains('@')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{url}: not a usable store URL (want http(s)://host[:port]/path/, without user@)"),
            ));
        }
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(30))
            .max_idle_connections_per_host(32)
            .user_agent(concat!("imprint/", env!("CARGO_PKG_VERSION")));
        if base.to_ascii_lowercase().starts_with("https://") {
            b = b.tls_config(tls_config()?);
        }
        Ok(HttpBackend {
            base,
            agent: b.build(),
        })
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{}", self.base, encode_path(rel))
    }

    /// One try: GET with an optional `Range: bytes=start-`/`start-end`, appending the
    /// body to `out` until `want` bytes (or the end, when `want` is None). Bytes received
    /// before a failure stay in `out`, so the next try resumes after them.
    fn try_get(
        &self,
        url: &str,
        range: Option<(u64, Option<u64>)>,
        want: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let mut req = self.agent.get(url);
        if let Some((a, b)) = range {
            let v = match b {
                Some(b) => format!("bytes={a}-{b}"),
                None => format!("bytes={a}-"),
            };
            req = req.set("Range", &v);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => return Err(status_failure(url, code)),
            Err(ureq::Error::Transport(t)) => return Err(transport_failure(url, t)),
        };
        let expect = if range.is_some() { 206 } else { 200 };
        if resp.status() != expect {
            return Err(Failure::Fatal(io::Error::other(format!(
                "{url}: the server answered HTTP {} where {expect} was expected{}",
                resp.status(),
                if expect == 206 {
                    "; an HTTP store needs a server that honours Range requests"
                } else {
                    ""
                }
            ))));
        }
        if let (Some((a, _)), Some(cr)) = (range, resp.header("Content-Range")) {
            if !cr.starts_with(&format!("bytes {a}-")) {
                return Err(Failure::Fatal(io::Error::other(format!(
                    "{url}: asked for bytes from {a}, the server sent {cr}"
                ))));
            }
        }
        let len: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
        let limit = want.or(len).unwrap_or(MAX_WHOLE_FILE);
        if limit > MAX_WHOLE_FILE {
            return Err(Failure::Fatal(io::Error::other(format!(
                "{url}: {limit} bytes is larger than any store file"
            ))));
        }
        let start = out.len();
        let mut reader = resp.into_reader().take(limit);
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Failure::Retry(io::Error::new(
                        e.kind(),
                        format!("connection lost while receiving: {e}"),
                    )))
                }
            }
        }
        let got = (out.len() - start) as u64;
        if (want.is_some() || len.is_some()) && got < limit {
            return Err(Failure::Retry(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the connection closed after {got} of {limit} bytes"),
            )));
        }
        Ok(())
    }

    /// Runs `one` until it succeeds, a fatal answer, or [`TRIES`] failed tries without
    /// progress. `progress` says how many bytes are in hand (a try that received bytes
    /// starts the count again: the loop still ends because the file is finite).
    fn with_retries(
        &self,
        mut one: impl FnMut() -> Result<(), Failure>,
        progress: impl Fn() -> usize,
    ) -> io::Result<()> {
        let mut failed = 0;
        let mut delay = BACKOFF_FIRST;
        loop {
            let before = progress();
            match one() {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    if progress() > before {
                        failed = 0;
                        delay = BACKOFF_FIRST;
                    }
                    failed += 1;
                    if failed >= TRIES {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{e} (gave up after {TRIES} tries)"),
                        ));
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

enum Failure {
    /// Worth another try: connection refused/reset, timeout, 5xx, a body cut short.
    Retry(io::Error),
    /// Another try would get the same answer: 404, 403, a server without ranges.
    Fatal(io::Error),
}

fn status_failure(url: &str, code: u16) -> Failure {
    let (kind, what) = match code {
        404 | 410 => (io::ErrorKind::NotFound, "not found"),
        401 | 403 => (io::ErrorKind::PermissionDenied, "access denied"),
        416 => (
            io::ErrorKind::UnexpectedEof,
            "range past the end of the file",
        ),
        _ => (io::ErrorKind::Other, "server error"),
    };
    let e = io::Error::new(kind, format!("HTTP {code} ({what}) for {url}"));
    if code >= 500 || code == 408 || code == 429 {
        Failure::Retry(e)
    } else {
        Failure::Fatal(e)
    }
}

fn transport_failure(url: &str, t: ureq::Transport) -> Failure {
    use ureq::ErrorKind as K;
    // The caller's message names the file already; ureq's starts with the URL too.
    let full = t.to_string();
    let msg = full
        .strip_prefix(&format!("{url}: "))
        .unwrap_or(&full)
        .to_string();
    // Through a port forward (QEMU's guestfwd, a load balancer) a server that is gone
    // shows up as a connection closed before any status line.
    let msg = if matches!(t.kind(), K::BadStatus | K::BadHeader) {
        format!("no valid HTTP answer, the server closed the connection or is not HTTP ({msg})")
    } else {
        msg
    };
    match t.kind() {
        K::Dns => Failure::Retry(io::Error::new(io::ErrorKind::NotFound, msg)),
        K::ConnectionFailed | K::Io | K::BadStatus | K::BadHeader => {
            let lower = msg.to_ascii_lowercase();
            // A certificate the server shows will not change on the next try.
            if lower.contains("certificate") || lower.contains("invalidcert") {
                Failure::Fatal(io::Error::new(io::ErrorKind::PermissionDenied, msg))
            } else {
                Failure::Retry(io::Error::new(io::ErrorKind::ConnectionAborted, msg))
            }
        }
        _ => Failure::Fatal(io::Error::new(io::ErrorKind::InvalidInput, msg)),
    }
}

impl Backend for HttpBackend {
    fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let url = self.url(rel);
        let out = Mutex::new(Vec::new());
        // The first try is a plain GET (a Range request on an empty file is a 416); a
        // retry asks for the rest from where the previous try stopped.
        self.with_retries(
            || {
                let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                if o.is_empty() {
                    self.try_get(&url, None, None, &mut o)
                } else {
                    let have = o.len() as u64;
                    self.try_get(&url, Some((have, None)), None, &mut o)
                }
            },
            || out.lock().unwrap_or_else(|e| e.into_inner()).len(),
        )?;
        Ok(out.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let url = self.url(rel);
        let out = Mutex::new(Vec::with_capacity(buf.len()));
        let n = buf.len() as u64;
        self.with_retries(
            || {
                let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                let have = o.len() as u64;
                let range = (offset + have, Some(offset + n - 1));
                self.try_get(&url, Some(range), Some(n - have), &mut o)
            },
            || out.lock().unwrap_or_else(|e| e.into_inner()).len(),
        )?;
        let o = out.into_inner().unwrap_or_else(|e| e.into_inner());
        buf.copy_from_slice(&o);
        Ok(())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let rel = format!("{dir}/{INDEX_LIST}");
        let bytes = self.read(&rel).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{e}: the store has no {rel}; it was written by an older imprint \
                         (open it once for a capture with this version to write the lists)"
                    ),
                )
            } else {
                e
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{rel} is not UTF-8"))
        })?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// Percent-encodes each path segment (image names may hold spaces and any UTF-8).
fn encode_path(rel: &str) -> String {
    let mut s = String::with_capacity(rel.len());
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Certificate files trusted besides the system's CA certificates and `IMPRINT_HTTP_CA`,
/// each with the name of where it came from (for error messages).
static EXTRA_CAS: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Trusts the PEM certificates in `path` for `https://` stores, besides the system's CA
/// certificates and `IMPRINT_HTTP_CA`; `source` names the option it came from (e.g.
/// `--ca-cert`) in error messages. Takes effect for HTTPS stores opened afterwards: call
/// it before the first one (the TLS configuration is built once per process).
pub fn trust_ca_file(path: &Path, source: &str) {
    EXTRA_CAS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.to_path_buf(), source.to_string()));
}

/// Adds every PEM certificate of `path` to `roots`; an unreadable file or one without a
/// certificate is an error naming `source` and the file.
fn add_pem_file(
    roots: &mut rustls::RootCertStore,
    path: &Path,
    source: &str,
) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let fail = |e: &dyn fmt::Display| format!("{source} {}: {e}", path.display());
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| fail(&e))?;
    let mut n = 0;
    for c in certs {
        roots.add(c.map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
        n += 1;
    }
    if n == 0 {
        return Err(fail(&"no PEM certificate in it"));
    }
    Ok(())
}

/// rustls with the system's CA certificates (rustls-native-certs reads the distribution's
/// bundle, /etc/ssl/certs on Debian) plus `IMPRINT_HTTP_CA` and the files given to
/// [`trust_ca_file`]; built once per process.
fn tls_config() -> io::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if let Some(ca) = std::env::var_os("IMPRINT_HTTP_CA") {
                add_pem_file(&mut roots, Path::new(&ca), "IMPRINT_HTTP_CA")?;
            }
            for (path, source) in EXTRA_CAS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                add_pem_file(&mut roots, path, source)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_path("images/lab pc.json"), "images/lab%20pc.json");
        assert_eq!(encode_path("images/é#?.json"), "images/%C3%A9%23%3F.json");
    }

    #[test]
    fn urls_with_user_info_are_refused() {
        assert!(HttpBackend::new("http://u:p@host/store/").is_err());
        assert!(HttpBackend::new("http:///store/").is_err());
        assert_eq!(
            HttpBackend::new("http://host:8080/store")
                .unwrap()
                .describe(),
            "http://host:8080/store/"
        );
    }
}
