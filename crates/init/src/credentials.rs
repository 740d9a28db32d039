//! The credentials file on the IMPRINT partition, `/imprint/credentials` (docs/BOOT.md):
//! the user and password of an SMB store, kept off the kernel command line (which every
//! process can read in /proc/cmdline). Parsing is pure and never puts a value in an error.
//!
//! ```text
//! # Imprint store credentials
//! user=lab
//! password=s3cret with spaces=and equals signs
//! ```

use crate::cmdline::Secret;

/// Where the file lives, relative to the IMPRINT partition's root.
pub const PATH: &str = "imprint/credentials";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// Parses the file: `KEY=VALUE` lines (`user`, `password`), blank lines and `#` comments.
/// The value is everything after the first `=`, kept as is (spaces included) except a
/// trailing CR (a file written on Windows). Errors name the line and the key, never a value.
pub fn parse(text: &str) -> Result<Credentials, String> {
    let mut c = Credentials::default();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {n}: expected KEY=VALUE (user=NAME or password=PASSWORD)"
            ));
        };
        match key.trim() {
            "user" | "username" => {
                if c.user.is_some() {
                    return Err(format!("line {n}: user given twice"));
                }
                c.user = Some(value.trim().to_string()).filter(|u| !u.is_empty());
            }
            "password" => {
                if c.password.is_some() {
                    return Err(format!("line {n}: password given twice"));
                }
                c.password = Some(Secret::new(value));
            }
            other => {
                // A key is never a secret unless the line had no `=` in the right place;
                // print at most a short, safe prefix.
                let shown: String = other.chars().take(20).collect();
                return Err(format!(
                    "line {n}: unknown key {shown:?} (known: user, password)"
                ));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_with_comments_crlf_and_equals() {
        let c = parse("# lab share\r\nuser = lab\r\n\r\npassword=p@ss word=1\r\n").unwrap();
        assert_eq!(c.user.as_deref(), Some("lab"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p@ss word=1"));
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn empty_file_has_nothing_and_an_empty_password_is_kept() {
        assert_eq!(parse("").unwrap(), Credentials::default());
        let c = parse("password=\n").unwrap();
        assert_eq!(c.password.as_ref().map(Secret::expose), Some(""));
    }

    #[test]
    fn errors_never_show_a_value() {
        let e = parse("user=lab\ns3cret\n").unwrap_err();
        assert!(e.starts_with("line 2:") && !e.contains("s3cret"), "{e}");
        let e = parse("pasword=s3cret\n").unwrap_err();
        assert!(e.contains("pasword") && !e.contains("s3cret"), "{e}");
        let e = parse("password=a\npassword=s3cret\n").unwrap_err();
        assert!(e.contains("twice") && !e.contains("s3cret"), "{e}");
    }
}
